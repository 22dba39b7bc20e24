"""Floors every model must beat: a value's historical positive rate (count rules, no gradient training).

``user_rate`` predicts the user's positive rate on the training rows,
``item_rate`` the item's, each smoothed toward the global rate of the training
rows: ``p = (positives + m * global) / (rows + m)`` with ``m = smoothing``
pseudo-rows. A value never seen in training (the vocabulary's OOV and missing
slots) gets the global rate. One model is fitted on all training domains
together (a user's rate counts every domain), so its "heads" are all the same.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from unictr_core.baselines.base import BaselineModel
from unictr_core.baselines.features import EncodedData, FeatureSpec
from unictr_core.data.schema import Sample

FLOOR = "floor (count rule)"


class PositiveRate(BaselineModel):
    """The historical positive rate of one field's value, smoothed toward the global rate."""

    multi_domain = True
    category = FLOOR
    field = "user_id"

    def __init__(self, spec: FeatureSpec, smoothing: float = 10.0, **_ignored):
        torch.nn.Module.__init__(self)   # no embeddings: nothing here is trained by gradient
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        self.spec = spec
        self.smoothing = float(smoothing)
        self.column = spec.field_names.index(self.field)
        size = spec.field_sizes[self.column]
        self.register_buffer("positives", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("rows", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("global_rate", torch.tensor(0.5, dtype=torch.float64))

    def fit_counts(self, data: EncodedData) -> None:
        """Count rows and positives per value of the field on the training rows ``data``."""
        if len(data) == 0:
            raise ValueError(f"{type(self).__name__}: no training rows")
        values = torch.from_numpy(data.fields[:, self.column])
        labels = torch.from_numpy(data.labels.astype(np.float64))
        self.positives.zero_().index_add_(0, values, labels)
        self.rows.zero_().index_add_(0, values, torch.ones_like(labels))
        self.global_rate.fill_(float(labels.mean()))

    def forward(self, fields: torch.Tensor, history: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        values = fields[:, self.column]
        rate = (self.positives[values] + self.smoothing * self.global_rate) / (self.rows[values] + self.smoothing)
        rate = rate.clamp(1e-6, 1 - 1e-6)
        return torch.log(rate) - torch.log1p(-rate)


class UserRate(PositiveRate):
    """The user's historical positive rate (fitted on the training rows, smoothed toward the global rate)."""

    field = "user_id"


class ItemRate(PositiveRate):
    """The item's historical positive rate (fitted on the training rows, smoothed toward the global rate)."""

    field = "item_id"


FLOORS = {"user_rate": UserRate, "item_rate": ItemRate}


def floor_scores(train: Sequence[Sample], valid: Sequence[Sample], test: Sequence[Sample]) -> dict[str, dict]:
    """Every registered floor baseline fitted on ``train`` and scored on ``test``: name -> {auc, logloss, ece,
    auc_interval} (the bootstrap 95 % interval of the AUC, see :func:`unictr_core.metrics.auc_interval`).

    Used by ``unictr domain add`` to print the floors of the new domain next to its DSN and zero-shot score.
    """
    from unictr_core import metrics
    from unictr_core.baselines.registry import baselines
    from unictr_core.baselines.trainer import fit_baseline

    labels = [s.label for s in test]
    out = {}
    for name, info in baselines().items():
        if info.category != FLOOR:
            continue
        probs = fit_baseline(name, info.factory, train, valid).predict(test)
        out[name] = {"auc": metrics.auc(labels, probs), "logloss": metrics.logloss(labels, probs),
                     "ece": metrics.ece(labels, probs), "auc_interval": metrics.auc_interval(labels, probs)}
    return out
