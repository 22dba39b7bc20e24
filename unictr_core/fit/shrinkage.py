"""How much of a residual DSN's correction to keep, chosen on its domain's validation part.

A residual DSN predicts ``general + c``: the general network's logit plus its own correction ``c``. Its
*shrinkage* ``s`` in [0, 1] keeps ``general + s * c``: 1 is the DSN as trained, 0 the general network alone.
``s`` is the value of :data:`SCALES` with the lowest validation logloss (ties go to the larger ``s``: the DSN
is kept unless less of it is better). The correction is linear in the tower's last layer (and the wide term of
a DSN with count statistics), so :meth:`~unictr_core.modeling.networks.DomainNetwork.scale_correction` folds
``s`` into those weights: the stored DSN needs no new tensor and predicts exactly ``general + s * c``.

Why: on all of MovieLens-100K (15 genres trained jointly, 4 epochs) the general network alone scored a higher
mean test AUC than the DSNs, whose corrections overfit the small genres (45-76 validation rows); choosing
``s`` per genre on validation kept the DSNs where they helped (docs/results.md, "Shrinking each DSN's
correction"). The logloss, not the AUC, chooses: a proper score on every row, less noisy on small parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

SCALES = tuple(i / 10 for i in range(11))  # 0, 0.1, ..., 1


@dataclass
class Shrinkage:
    scale: float = 1.0
    rows: int = 0                      # validation rows it was chosen on
    logloss_before: Optional[float] = None  # the DSN as trained (scale 1)
    logloss_after: Optional[float] = None

    def apply(self, general_logits, dsn_logits) -> np.ndarray:
        """``general + scale * (dsn - general)``: what the shrunk DSN predicts, from the unshrunk logits."""
        general = np.asarray(general_logits, dtype=np.float64)
        return general + self.scale * (np.asarray(dsn_logits, dtype=np.float64) - general)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "valid_rows": self.rows, "valid_logloss_before": self.logloss_before,
                "valid_logloss_after": self.logloss_after}


def _logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean cross-entropy of sigmoid(logits) against 0/1 ``labels``, computed stably."""
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_shrinkage(general_logits, dsn_logits, labels) -> Shrinkage:
    """The scale of :data:`SCALES` with the lowest logloss of ``general + s * (dsn - general)`` on ``labels``
    (see the module doc). Fewer than two label classes: 1 (nothing to choose by)."""
    general = np.asarray(general_logits, dtype=np.float64)
    dsn = np.asarray(dsn_logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not general.shape == dsn.shape == y.shape:
        raise ValueError(f"general logits, DSN logits and labels differ in length: {general.size}, {dsn.size}, "
                         f"{y.size}")
    if y.size == 0 or y.min() == y.max():
        before = _logloss(y, dsn) if y.size else None
        return Shrinkage(rows=int(y.size), logloss_before=before, logloss_after=before)
    losses = {s: _logloss(y, Shrinkage(s).apply(general, dsn)) for s in SCALES}
    best = max(SCALES)
    for s in sorted(SCALES, reverse=True):
        if losses[s] < losses[best]:
            best = s
    return Shrinkage(best, int(y.size), losses[max(SCALES)], losses[best])


def logit(probs) -> np.ndarray:
    """The logits of probabilities (clipped to (1e-7, 1 - 1e-7), as float32 sigmoids saturate there)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)
