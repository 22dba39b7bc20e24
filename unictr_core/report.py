"""Plain-text tables and evaluation reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from unictr_core import metrics
from unictr_core.predict import Predictions, domain_metrics, mean_auc
from unictr_core.schema import Sample


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluation_report(samples: Sequence[Sample], predictions: Predictions, reference: str = "general",
                      reference_report: Optional[dict] = None) -> dict[str, Any]:
    """Per-domain AUC/logloss, overall AUC, and RelaImpr against a named reference.

    ``reference='general'`` compares each domain's prediction with the general
    network's; otherwise ``reference_report`` (an earlier report) supplies the
    reference AUC per domain under the name ``reference``.
    """
    per_domain = domain_metrics(samples, predictions)
    labels = np.array([s.label for s in samples])
    for domain, m in per_domain.items():
        if reference_report is None:
            base = m["general_auc"]
        else:
            base = (reference_report.get("domains", {}).get(domain) or {}).get("auc")
        m["reference_auc"] = base
        m["rela_impr"] = metrics.rela_impr(m["auc"], base)
    return {
        "reference": reference,
        "rows": len(samples),
        "overall_auc": metrics.auc(labels, predictions.probs),
        "overall_logloss": metrics.logloss(labels, predictions.probs),
        "mean_domain_auc": mean_auc(per_domain, include_zero_shot=True),
        "domains": per_domain,
    }


def evaluation_table(report: dict[str, Any]) -> str:
    rows = []
    for domain, m in report["domains"].items():
        rows.append([domain, m["rows"], "general (zero-shot)" if m["zero_shot"] else "DSN", m["auc"], m["logloss"],
                     m["reference_auc"], None if m["rela_impr"] is None else f"{m['rela_impr']:+.2f}%"])
    rows.append(["overall", report["rows"], "", report["overall_auc"], report["overall_logloss"], None, None])
    headers = ["domain", "rows", "predicted by", "AUC", "logloss", f"AUC {report['reference']}", "RelaImpr"]
    return format_table(headers, rows)


def write_json(path: Path, data: Any) -> None:
    from unictr_core.data_io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
