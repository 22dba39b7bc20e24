"""Learned ID embeddings for ID-aware Uni-CTR (``ModelConfig.ids``): the sample's categorical fields, hashed.

Every sample gives a row of bucket indices: its user, its item, with
``history`` > 0 the titles of its last ``history`` history items (padded to
that width), then its other categorical fields: by default a bag of them
(brand and every short ``extra`` field, mean-pooled into one vector), or with
``fields`` named one slot per field in that order (each embedded on its own,
as the ID baselines do; an absent value is :data:`NO_VALUE`). Each value is
hashed with its field name (BLAKE2b, stable across processes and machines)
into ``1 .. buckets - 1``; ``0`` means "no value" and embeds to the zero
vector. Nothing is fitted: a user or item never seen in training (a new
domain's items, say) lands in a bucket no training row touched, whose
embedding is still its initial zero, i.e. "no ID information", unless it
collides with a trained value (with 16,384 buckets and a few thousand values,
rarely). The tables belong to the network that reads them: the general
network's are part of the frozen core, a DSN's part of its bundle.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import torch
from torch import nn

from unictr_core.data.fields import categorical_fields
from unictr_core.data.schema import Sample

NO_VALUE = 0
MAX_VALUE_LENGTH = 64               # longer extra values are free text, not categories: left out
CORE_FIELDS = ("brand", "price")    # the Sample fields that ``fields`` may name besides its extra fields


def bucket(field: str, value: str, buckets: int) -> int:
    """The bucket (1 .. buckets - 1) of ``field = value``."""
    digest = hashlib.blake2b(f"{field}\x1f{value}".encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (buckets - 1)


def id_slots(sample: Sample, buckets: int, history: int = 0, fields: Sequence[str] = ()) -> list[int]:
    """[user, item, ``history`` history slots, brand and extra fields ...] as bucket indices; the history slots
    hold the last ``history`` history titles, padded with :data:`NO_VALUE`. Without ``fields`` the rest is a bag
    (absent values left out); with ``fields`` one slot per named field (``brand``, ``price`` or an ``extra``
    name), :data:`NO_VALUE` where the sample has none."""
    slots = [bucket("user_id", sample.user_id, buckets) if sample.user_id else NO_VALUE,
             bucket("item_id", sample.item_id, buckets) if sample.item_id else NO_VALUE]
    if history > 0:
        recent = [bucket("history", title, buckets) for title in sample.history[-history:] if title]
        slots += recent + [NO_VALUE] * (history - len(recent))
    if fields:
        return slots + [_field_bucket(sample, name, buckets) for name in fields]
    if sample.brand:
        slots.append(bucket("brand", sample.brand, buckets))
    for name in sorted(sample.extra):
        value = sample.extra[name]
        if value is not None and 0 < len(str(value)) <= MAX_VALUE_LENGTH:
            slots.append(bucket(f"extra:{name}", str(value), buckets))
    return slots


def _field_bucket(sample: Sample, name: str, buckets: int) -> int:
    """The bucket of ``sample``'s value of field ``name``, hashed as the bag hashes it; NO_VALUE when absent."""
    value = sample.field_value(name)
    if value is None or len(value) > MAX_VALUE_LENGTH:
        return NO_VALUE
    return bucket(name if name in CORE_FIELDS else f"extra:{name}", value, buckets)


def detected_id_fields(samples: Sequence[Sample]) -> list[str]:
    """The per-field layout that ``ModelConfig.id_fields = ["auto"]`` resolves to on a training split: ``brand``
    when a row has one, then its categorical extra fields (:func:`unictr_core.data.fields.categorical_fields`)."""
    return (["brand"] if any(s.brand for s in samples) else []) + categorical_fields(samples)


def id_tensor(rows: Sequence[Sequence[int]], device: Optional[torch.device] = None) -> torch.Tensor:
    """The slot rows of a batch as one [B, S] tensor (S >= 3), the bags padded with :data:`NO_VALUE`."""
    width = max(3, max((len(r) for r in rows), default=0))
    out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out if device is None else out.to(device)


class IdEmbedding(nn.Module):
    """One hashed table for every field: [user; item; mean of the history (``history`` > 0); mean of the bag]
    -> [B, 3 * dim] or [B, 4 * dim], or with ``fields`` > 0 named fields [user; item; history mean; field 1; ...;
    field n] -> [B, (2 + n) * dim] or [B, (3 + n) * dim] (slots laid out by :func:`id_slots` with the same
    ``history`` and that many ``fields``).

    Rows start at zero (so does the padding row, which never trains): an ID
    contributes only what training taught its bucket.
    """

    def __init__(self, buckets: int, dim: int, history: int = 0, fields: int = 0):
        super().__init__()
        self.table = nn.Embedding(buckets, dim, padding_idx=NO_VALUE)
        nn.init.zeros_(self.table.weight)
        self.history = history
        self.fields = fields
        self.out_dim = (2 + (history > 0) + (fields or 1)) * dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.table(ids)                                         # [B, S, dim]
        parts = [emb[:, 0], emb[:, 1]]
        bag_start = 2 + self.history
        if self.history > 0:
            parts.append(_mean_of_present(emb[:, 2:bag_start], ids[:, 2:bag_start]))
        if self.fields:
            parts.append(emb[:, bag_start:bag_start + self.fields].flatten(1))
        else:
            parts.append(_mean_of_present(emb[:, bag_start:], ids[:, bag_start:]))
        return torch.cat(parts, dim=1)


def _mean_of_present(emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The mean of the embeddings [B, S, dim] of the slots that hold a value (zeros where none does)."""
    count = (ids != NO_VALUE).sum(dim=1, keepdim=True).clamp(min=1).to(emb.dtype)
    return emb.sum(dim=1) / count


def check_ids(network: str, embedding: Optional[IdEmbedding], ids: Optional[torch.Tensor]) -> None:
    if embedding is not None and ids is None:
        raise ValueError(f"this {network} reads ID embeddings (ModelConfig.ids): pass the batch's ids")


def id_table_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of every :class:`IdEmbedding` inside ``module`` (``TrainConfig.id_lr_scale``)."""
    return [p for m in module.modules() if isinstance(m, IdEmbedding) for p in m.parameters() if p.requires_grad]
