"""The interface every baseline model implements (built-in or from a third-party plugin)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from unictr_core.baselines.features import FeatureSpec
from unictr_core.baselines.layers import FieldEmbedding
from unictr_core.config import BaselineSettings


class BaselineModel(nn.Module):
    """A CTR model over categorical fields.

    ``forward(fields [N, F], history [N, K], head [N]) -> logits [N]``.
    ``head`` is the index (into ``spec.domains``) of the domain head to use;
    single-domain models (``multi_domain = False``) ignore it, and the trainer
    builds one of them per domain. Multi-domain models have one head per
    training domain.

    A model with a ``fit_counts(data)`` method is fitted by it (one pass of
    counting, see :mod:`unictr_core.baselines.floors`) instead of by gradient
    descent.
    """

    multi_domain: bool = False
    dropped_fields: tuple[str, ...] = ()   # fields this model does not embed
    category: Optional[str] = None         # None: single- or multi-domain, from ``multi_domain``

    def __init__(self, spec: FeatureSpec, embed_dim: int = BaselineSettings.embed_dim,
                 hidden: Sequence[int] = BaselineSettings.hidden, dropout: float = BaselineSettings.dropout):
        super().__init__()
        self.spec = spec
        self.embed_dim = embed_dim
        self.hidden = tuple(hidden)
        self.dropout = dropout
        self.embedding = FieldEmbedding(spec, embed_dim, drop=self.dropped_fields)
        self.num_slots = self.embedding.num_slots
        self.flat_dim = self.num_slots * embed_dim

    @property
    def num_heads(self) -> int:
        return self.spec.num_domains if self.multi_domain else 1

    def forward(self, fields: torch.Tensor, history: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
