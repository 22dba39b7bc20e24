"""Building blocks shared by the baseline models (no BatchNorm anywhere: nothing mixes domains' statistics)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from unictr_core.baselines.features import FeatureSpec


class FieldEmbedding(nn.Module):
    """Embeds every categorical field plus the mean-pooled history: output [N, F + 1, dim].

    All fields share one table (with per-field offsets), so each field keeps
    its own index range. The history slot is the mean of the non-padding
    history item embeddings (zeros when the user has no history).
    """

    def __init__(self, spec: FeatureSpec, dim: int):
        super().__init__()
        sizes = torch.tensor([0] + list(spec.field_sizes[:-1]), dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, dim=0), persistent=False)
        self.table = nn.Embedding(sum(spec.field_sizes), dim)
        self.history = nn.Embedding(max(spec.history_size, 1), dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.05)
        nn.init.normal_(self.history.weight, std=0.05)
        with torch.no_grad():
            self.history.weight[0].zero_()
        self.num_slots = spec.num_fields + 1
        self.dim = dim

    def forward(self, fields: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        emb = self.table(fields + self.offsets)
        hist = self.history(history)
        count = (history > 0).sum(dim=1, keepdim=True).clamp(min=1).to(hist.dtype)
        pooled = hist.sum(dim=1) / count
        return torch.cat([emb, pooled.unsqueeze(1)], dim=1)


def mlp(in_dim: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU + Dropout per hidden size (empty ``hidden`` = identity)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


def out_dim(in_dim: int, hidden: Sequence[int]) -> int:
    return hidden[-1] if hidden else in_dim


def per_head(head: torch.Tensor, n_rows: int, compute: Callable[[int, torch.Tensor], torch.Tensor],
             like: torch.Tensor) -> torch.Tensor:
    """Run ``compute(h, rows)`` once per head index present in ``head`` and scatter the [rows] results back.

    Only the heads a batch needs are computed, and each sample's gradient
    reaches only its own head's parameters.
    """
    out = like.new_zeros(n_rows)
    for h in torch.unique(head).tolist():
        rows = (head == h).nonzero(as_tuple=True)[0]
        out = out.index_put((rows,), compute(int(h), rows))
    return out
