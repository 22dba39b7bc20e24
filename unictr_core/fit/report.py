"""Evaluation reports: per-domain AUC (with its bootstrap 95 % interval), logloss, ECE, their means, and RelaImpr
where its reference is clearly above chance (else the AUC gain with its interval); as JSON and as the tables
`evaluate` and `domain add` print."""

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
    names = np.array([s.domain for s in samples])
    for domain, m in per_domain.items():
        rows = names == domain
        y, probs, general = labels[rows], predictions.probs[rows], predictions.general_probs[rows]
        m["ece"], m["general_ece"] = metrics.ece(y, probs), metrics.ece(y, general)
        m["auc_interval"] = metrics.auc_interval(y, probs)
        if reference_report is None:
            reference_entry = {"auc": m["general_auc"], "auc_interval": metrics.auc_interval(y, general)}
            m["auc_gain"] = None if m["zero_shot"] else metrics.paired_auc_gain(y, probs, general)
        else:
            reference_entry = reference_report.get("domains", {}).get(domain) or {}
            m["auc_gain"] = None
        _relative(m, reference_entry.get("auc"), reference_entry.get("auc_interval"))
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


def _relative(m: dict, base: Optional[float], base_interval) -> None:
    """RelaImpr of ``m`` against ``base``, only where the reference is clearly above chance: its bootstrap
    interval (when known) entirely above 0.5; otherwise ``rela_impr`` is None and the note says why."""
    m["reference_auc"] = base
    m["reference_auc_interval"] = base_interval
    m["rela_impr"] = metrics.rela_impr(m["auc"], base)
    m["rela_impr_note"] = None if m["auc"] is None else metrics.rela_impr_note(base)
    if m["rela_impr"] is not None and base_interval is not None and not metrics.clearly_above_chance(base_interval):
        m["rela_impr"] = None
        m["rela_impr_note"] = (f"reference AUC {base:.4f} is not clearly above 0.5 (95% interval "
                               f"{interval_text(base_interval)}); compare the AUC gain with its interval")


def interval_text(interval) -> str:
    """A 95 % interval as ``[low, high]`` (3 decimals), or ``n/a``."""
    return "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def gain_text(gain: Optional[dict]) -> str:
    """An AUC gain with its paired bootstrap interval, e.g. ``+0.0312 [+0.004, +0.058]``."""
    return "n/a" if gain is None else f"{gain['gain']:+.4f} [{gain['low']:+.3f}, {gain['high']:+.3f}]"


def _relative_text(m: dict) -> Optional[str]:
    if m["rela_impr"] is not None:
        return f"{m['rela_impr']:+.2f}%"
    if m.get("auc_gain") is not None:
        return f"gain {gain_text(m['auc_gain'])}"
    return "n/a" if m.get("rela_impr_note") else None


def evaluation_table(report: dict[str, Any]) -> str:
    rows = []
    for domain, m in report["domains"].items():
        rows.append([domain, m["rows"], "general (zero-shot)" if m["zero_shot"] else "DSN", m["auc"],
                     interval_text(m.get("auc_interval")), m["logloss"], m.get("ece"), m["reference_auc"],
                     _relative_text(m)])
    rows.append(["mean of domains", len(report["domains"]), "", report.get("mean_domain_auc"), None,
                 report.get("mean_domain_logloss"), None, None, None])
    rows.append(["overall (pooled)", report["rows"], "", report["overall_auc"], None, report["overall_logloss"],
                 None, None, None])
    headers = ["domain", "rows", "predicted by", "AUC", "AUC 95% interval", "logloss", "ECE",
               f"AUC {report['reference']}", "RelaImpr (or AUC gain)"]
    notes = sorted({f"RelaImpr n/a for {d}: {m['rela_impr_note']}" for d, m in report["domains"].items()
                    if m["rela_impr"] is None and m.get("rela_impr_note")})
    footer = ["overall (pooled): every row of every domain ranked together; with different positive rates per "
              "domain it can differ from all per-domain AUCs (mean of domains: the mean of their AUCs)",
              "intervals: bootstrap 95% (1,000 resamples of the domain's rows); ECE: expected calibration error, "
              "10 bins; RelaImpr only against a reference clearly above 0.5, else the AUC gain over it "
              "(paired bootstrap)", *notes]
    return format_table(headers, rows) + "\n" + "\n".join(footer)


def domain_add_table(name: str, test: dict, floors: dict) -> str:
    """What `domain add` prints: the added DSN, zero-shot and the floors on the held-out rows, each with its AUC
    interval, logloss and ECE; then the DSN's AUC gain over zero-shot (and RelaImpr where it means something)."""
    rows = [[test["rows"], f"DSN '{name}'", test["auc"], interval_text(test.get("auc_interval")), test["logloss"],
             test.get("ece")],
            [test["rows"], "general network (zero-shot)", test["general_auc"],
             interval_text(test.get("general_auc_interval")), test["general_logloss"], test.get("general_ece")]]
    rows += [[test["rows"], f"floor: {floor} (train part)", m["auc"], interval_text(m.get("auc_interval")),
              m["logloss"], m.get("ece")] for floor, m in floors.items()]
    table = format_table(["held-out rows", "predicted by", "AUC", "AUC 95% interval", "logloss", "ECE"], rows)
    m = {"auc": test["auc"], "auc_gain": test.get("auc_gain")}
    _relative(m, test["general_auc"], test.get("general_auc_interval"))
    line = f"AUC gain of the DSN over zero-shot: {gain_text(m['auc_gain'])} (paired bootstrap 95% interval)"
    if m["rela_impr"] is not None:
        line += f"; RelaImpr {m['rela_impr']:+.2f}%"
    elif m["rela_impr_note"]:
        line += f"; no RelaImpr: {m['rela_impr_note']}"
    return table + "\n" + line


def write_json(path: Path, data: Any) -> None:
    from unictr_core.data.data_io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")  # never NaN
