"""Building blocks shared by the baseline models (no BatchNorm anywhere: nothing mixes domains' statistics)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from unictr_core.baselines.features import OOV, FeatureSpec


class FieldEmbedding(nn.Module):
    """Embeds the categorical fields plus the mean-pooled history: output [N, F_kept + 1, dim].

    All kept fields share one table (with per-field offsets), so each field
    keeps its own index range; ``drop`` names fields the model does not use.
    The rows of the OOV index (values never seen in training) start at zero
    and, as no training row uses them, stay a neutral zero vector. The history
    slot is the mean of the non-padding history item embeddings (zeros when
    the user has no history).
    """

    def __init__(self, spec: FeatureSpec, dim: int, drop: Sequence[str] = ()):
        super().__init__()
        unknown = sorted(set(drop) - set(spec.field_names))
        if unknown:
            raise ValueError(f"cannot drop unknown field(s) {unknown}; fields: {spec.field_names}")
        keep = [i for i, name in enumerate(spec.field_names) if name not in set(drop)]
        sizes = [spec.field_sizes[i] for i in keep]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)
        offsets = torch.cumsum(torch.tensor([0] + sizes[:-1], dtype=torch.long), dim=0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(max(sum(sizes), 1), dim)
        self.history = nn.Embedding(max(spec.history_size, 1), dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.05)
        nn.init.normal_(self.history.weight, std=0.05)
        with torch.no_grad():
            self.history.weight[0].zero_()
            self.history.weight[OOV].zero_()
            self.table.weight[offsets + OOV] = 0.0
        self.num_slots = len(keep) + 1
        self.dim = dim

    def forward(self, fields: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        emb = self.table(fields.index_select(1, self.keep) + self.offsets)
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
