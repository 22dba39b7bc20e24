"""Calibration of a DSN's logit, fitted on the domain's validation part: ``p = sigmoid(a * logit + b)``.

Two scalars (both stored in the DSN). By default only the temperature ``a`` is fitted and ``b`` stays 0
(temperature scaling); ``fit_bias`` fits ``b`` too (Platt scaling). Measured on the built-in board_games
(issue 21): Platt's ``b`` took on the validation part's positive rate (0.48, 100 rows), which the held-out
part did not share (0.555), and made the test logloss worse than no calibration; the temperature alone
keeps the base rate the DSN learned on the training part. Fitted by Newton's method with a line search
on Platt's smoothed targets (``(positives + 1) / (positives + 2)`` for a positive, ``1 / (negatives + 2)``
for a negative), which keep ``a`` finite on a small or separable validation part. ``a > 0`` keeps the
ranking, so the AUC does not change. The fit is kept only when it lowers the validation logloss beyond
the part's noise: the paired bootstrap 95 % interval of the per-row logloss gain (1,000 resamples) lies
above 0; otherwise the identity (1, 0) is kept. On board_games (100 validation rows, a DSN that was not
over-confident) a temperature with a small validation gain raised the held-out logloss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unictr_core import metrics

NEWTON_STEPS = 50
RESAMPLES = 1000


@dataclass
class Calibration:
    scale: float = 1.0
    bias: float = 0.0
    rows: int = 0                      # validation rows it was fitted on
    logloss_before: float | None = None
    logloss_after: float | None = None

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(logits, dtype=np.float64) + self.bias

    def to_dict(self) -> dict:
        return {"scale": self.scale, "bias": self.bias, "valid_rows": self.rows,
                "valid_logloss_before": self.logloss_before, "valid_logloss_after": self.logloss_after}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _loss(a: float, b: float, z: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy of sigmoid(a z + b) against the (smoothed) targets, computed stably."""
    u = a * z + b
    return float(np.mean(np.logaddexp(0.0, u) - target * u))


def _newton(z: np.ndarray, target: np.ndarray, fit_bias: bool) -> tuple[float, float]:
    """Newton's method with a backtracking line search (the loss is convex in (a, b)); b stays 0 unless
    ``fit_bias``."""
    a, b = 1.0, 0.0
    x = np.column_stack([z, np.ones_like(z)]) if fit_bias else z[:, None]
    loss = _loss(a, b, z, target)
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(a * z + b)
        gradient = x.T @ (p - target) / z.size
        hessian = (x * (p * (1 - p))[:, None]).T @ x / z.size + 1e-9 * np.eye(x.shape[1])
        step = np.append(np.linalg.solve(hessian, gradient), 0.0)
        size = 1.0
        while size > 1e-6 and _loss(a - size * step[0], b - size * step[1], z, target) > loss:
            size /= 2
        if size <= 1e-6:
            break
        a, b = a - size * float(step[0]), b - size * float(step[1])
        previous, loss = loss, _loss(a, b, z, target)
        if previous - loss < 1e-12:
            break
    return a, b


def fit_calibration(logits, labels, fit_bias: bool = False) -> Calibration:
    """The a (and with ``fit_bias`` b) that minimise the logloss of ``sigmoid(a * logits + b)`` on ``labels``
    (see the module doc)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    before = metrics.logloss(y, _sigmoid(z))
    identity = Calibration(rows=int(y.size), logloss_before=before, logloss_after=before)
    if y.size == 0 or y.min() == y.max():
        return identity
    positives, negatives = y.sum(), y.size - y.sum()
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    a, b = _newton(z, target, fit_bias)
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return identity
    after = metrics.logloss(y, _sigmoid(a * z + b))
    if not _clearly_better(y, z, a, b):
        return identity
    return Calibration(a, b, int(y.size), before, after)


def _row_logloss(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, logits) - y * logits


def _clearly_better(y: np.ndarray, z: np.ndarray, a: float, b: float) -> bool:
    """Whether the paired bootstrap 95 % interval of the mean per-row logloss gain of (a, b) lies above 0."""
    gain = _row_logloss(y, z) - _row_logloss(y, a * z + b)
    weights = metrics.resample_weights(y.size, RESAMPLES, seed=0)
    means = weights @ gain / y.size
    return float(np.percentile(means, 2.5)) > 0.0
