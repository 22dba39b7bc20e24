"""CTR metrics: AUC, logloss and RelaImpr."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def auc(labels: Sequence[int], probs: Sequence[float]) -> Optional[float]:
    """ROC AUC, or ``None`` when the labels hold only one class (AUC undefined)."""
    y = np.asarray(labels)
    if y.size == 0 or np.unique(y).size < 2:
        return None
    return float(roc_auc_score(y, np.asarray(probs, dtype=np.float64)))


def logloss(labels: Sequence[int], probs: Sequence[float]) -> Optional[float]:
    y = np.asarray(labels)
    if y.size == 0:
        return None
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(log_loss(y, p, labels=[0, 1]))


def scores_by_domain(domains: Sequence[str], labels: Sequence[int], probs: Sequence[float]) -> dict[str, dict]:
    """The one per-domain scoring: for each domain (sorted), its rows, positives, positive rate, AUC and logloss
    of ``probs`` (row i belongs to ``domains[i]`` and has label ``labels[i]``)."""
    names = np.asarray(domains)
    y_all = np.asarray(labels, dtype=np.int64)
    p_all = np.asarray(probs, dtype=np.float64)
    out: dict[str, dict] = {}
    for domain in sorted(set(names.tolist())):
        rows = names == domain
        y = y_all[rows]
        out[domain] = {"rows": int(rows.sum()), "positives": int(y.sum()), "positive_rate": float(y.mean()),
                       "auc": auc(y, p_all[rows]), "logloss": logloss(y, p_all[rows])}
    return out


def rela_impr(auc_model: Optional[float], auc_base: Optional[float]) -> Optional[float]:
    """RelaImpr = ((AUC_model - 0.5) / (AUC_base - 0.5) - 1) * 100 (percent).

    ``None`` unless the reference AUC is above 0.5: against a reference at or below
    chance the ratio changes sign or explodes and would mislead (see :func:`rela_impr_note`).
    """
    if auc_model is None or rela_impr_note(auc_base) is not None:
        return None
    return ((auc_model - 0.5) / (auc_base - 0.5) - 1.0) * 100.0


def rela_impr_note(auc_base: Optional[float]) -> Optional[str]:
    """Why RelaImpr is not shown against ``auc_base`` (``None`` when it is meaningful)."""
    if auc_base is None:
        return "no reference AUC"
    if auc_base <= 0.5 or math.isclose(auc_base, 0.5):
        return f"reference AUC {auc_base:.4f} is not above 0.5"
    return None
