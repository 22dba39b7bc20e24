"""CTR metrics: AUC, logloss, expected calibration error, bootstrap intervals and RelaImpr."""

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


def ece(labels: Sequence[int], probs: Sequence[float], bins: int = 10) -> Optional[float]:
    """Expected calibration error: the row-weighted mean over ``bins`` equal-width probability bins of
    |mean predicted probability - positive rate|; ``None`` for no rows."""
    y = np.asarray(labels, dtype=np.float64)
    if y.size == 0:
        return None
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += rows.sum() * abs(p[rows].mean() - y[rows].mean())
    return float(total / y.size)


def resample_weights(rows: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """[resamples, rows] counts: how often each row is drawn in each bootstrap resample (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(rows, np.full(rows, 1.0 / rows), size=resamples).astype(np.float64)


def weighted_aucs(labels: Sequence[int], probs: Sequence[float], weights: np.ndarray) -> np.ndarray:
    """AUC of ``probs`` under each row of row ``weights`` [R, N] (ties count one half), NaN where a resample holds
    one class: all the bootstrap AUCs in one vectorised pass."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    y, p, w = y[order], p[order], weights[:, order]
    starts = np.unique(p, return_index=True)[1]
    positives = np.add.reduceat(w * y, starts, axis=1)
    negatives = np.add.reduceat(w * (1.0 - y), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    numerator = (positives * (below + 0.5 * negatives)).sum(axis=1)
    denominator = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _percentiles(values: np.ndarray, level: float) -> Optional[tuple[float, float]]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def auc_interval(labels: Sequence[int], probs: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> Optional[tuple[float, float]]:
    """The percentile bootstrap ``level`` interval of the AUC (rows resampled with replacement, seeded);
    ``None`` when the AUC is undefined on the rows themselves."""
    if auc(labels, probs) is None:
        return None
    return _percentiles(weighted_aucs(labels, probs, resample_weights(len(labels), resamples, seed)), level)


def paired_auc_gain(labels: Sequence[int], probs: Sequence[float], reference: Sequence[float],
                    resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Optional[dict]:
    """AUC(probs) - AUC(reference) on the same rows with its paired bootstrap ``level`` interval (each resample
    scores both): {"gain", "low", "high"}; ``None`` when an AUC is undefined."""
    first, second = auc(labels, probs), auc(labels, reference)
    if first is None or second is None:
        return None
    weights = resample_weights(len(labels), resamples, seed)
    gains = weighted_aucs(labels, probs, weights) - weighted_aucs(labels, reference, weights)
    low, high = _percentiles(gains, level)
    return {"gain": first - second, "low": low, "high": high}


def clearly_above_chance(interval: Optional[tuple[float, float]]) -> bool:
    """True when an AUC's interval lies entirely above 0.5 (RelaImpr against it then means something)."""
    return interval is not None and interval[0] > 0.5
