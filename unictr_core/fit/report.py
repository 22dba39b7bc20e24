"""Evaluation reports: per-domain AUC and logloss, their means, RelaImpr; as JSON and as the table `evaluate` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from unictr_core import metrics
from unictr_core.data.schema import Sample
from unictr_core.data.tables import fmt, format_table  # noqa: F401 - the tables of reports; re-exported
from unictr_core.modeling.predict import Predictions, domain_metrics, mean_auc, mean_domain_metric


POOLED_NOTE = ("overall_auc / overall_logloss pool the rows of every domain into one ranking; with different positive "
               "rates per domain it can be far from every per-domain AUC. mean_domain_auc is the mean of the "
               "per-domain AUCs.")


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
        m["rela_impr_note"] = None if m["auc"] is None else metrics.rela_impr_note(base)
    return {
        "reference": reference,
        "rows": len(samples),
        "overall_auc": metrics.auc(labels, predictions.probs),
        "overall_logloss": metrics.logloss(labels, predictions.probs),
        "overall_note": POOLED_NOTE,
        "mean_domain_auc": mean_auc(per_domain, include_zero_shot=True),
        "mean_domain_logloss": mean_domain_metric(per_domain, "logloss", include_zero_shot=True),
        "domains": per_domain,
    }


def evaluation_table(report: dict[str, Any]) -> str:
    rows = []
    for domain, m in report["domains"].items():
        rela = f"{m['rela_impr']:+.2f}%" if m["rela_impr"] is not None else (
            "n/a" if m.get("rela_impr_note") else None)
        rows.append([domain, m["rows"], "general (zero-shot)" if m["zero_shot"] else "DSN", m["auc"], m["logloss"],
                     m["reference_auc"], rela])
    rows.append(["mean of domains", len(report["domains"]), "", report.get("mean_domain_auc"),
                 report.get("mean_domain_logloss"), None, None])
    rows.append(["overall (pooled)", report["rows"], "", report["overall_auc"], report["overall_logloss"], None, None])
    headers = ["domain", "rows", "predicted by", "AUC", "logloss", f"AUC {report['reference']}", "RelaImpr"]
    notes = sorted({f"RelaImpr n/a for {d}: {m['rela_impr_note']}" for d, m in report["domains"].items()
                    if m["rela_impr"] is None and m.get("rela_impr_note")})
    footer = ["overall (pooled): every row of every domain ranked together; with different positive rates per "
              "domain it can differ from all per-domain AUCs (mean of domains: the mean of their AUCs)", *notes]
    return format_table(headers, rows) + "\n" + "\n".join(footer)


def write_json(path: Path, data: Any) -> None:
    from unictr_core.data.data_io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")  # never NaN
