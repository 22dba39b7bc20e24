"""Count statistics for a domain's DSN: what the count rules and the ID models see, as causal features.

For a row of the domain the DSN reads six counts: the positives and rows of its user, of its item, and of
the whole domain (its base rate), and turns them into five features (:func:`count_features`):

* per user and per item: the smoothed positive rate ``(positives + m * prior) / (rows + m)`` (``m`` =
  :data:`SMOOTHING` pseudo-rows at the domain's rate, as the floors), as its log-odds minus the prior's, and
  ``log(1 + rows)``;
* the domain's base rate ``(positives + 1) / (rows + 2)`` as log-odds.

The counts are *causal*. A training row sees only the training rows strictly earlier than itself
(:func:`causal_counts`: by timestamp, rows of the same instant see none of each other; without timestamps,
the rows' order), never its own label or a later one. At prediction time (validation, test, serving) a row
sees the whole training part: :class:`CountTables`, stored in the DSN's bundle. Users and items are keyed by
the hashed buckets of :mod:`unictr_core.modeling.ids` (the core's ``id_buckets``), so the tables have a
fixed size (2 fields x 2 counts x buckets float32: 256 KiB at 16,384 buckets) whatever the data; a value
with no bucket (no user / item id) counts as never seen. The tables change only when the domain is added
again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from unictr_core.data.schema import Sample
from unictr_core.modeling.ids import NO_VALUE, bucket

SMOOTHING = 10.0
FIELDS = ("user_id", "item_id")
COUNTS = 6          # user positives, user rows, item positives, item rows, domain positives, domain rows
FEATURES = 5


def keys(samples: Sequence[Sample], buckets: int) -> np.ndarray:
    """[N, 2] hashed buckets of each sample's user and item (:data:`NO_VALUE` where it has none), as the
    first two ID slots of :func:`unictr_core.modeling.ids.id_slots`."""
    out = np.zeros((len(samples), len(FIELDS)), dtype=np.int64)
    for i, s in enumerate(samples):
        for j, name in enumerate(FIELDS):
            value = getattr(s, name)
            out[i, j] = bucket(name, value, buckets) if value else NO_VALUE
    return out


def _instants(samples: Sequence[Sample]) -> list[list[int]]:
    """The rows grouped by instant, in time order: rows of one group may not see each other's labels."""
    if samples and all(s.timestamp is not None for s in samples):
        order = sorted(range(len(samples)), key=lambda i: (samples[i].timestamp, i))
        groups: list[list[int]] = []
        for i in order:
            if groups and samples[groups[-1][0]].timestamp == samples[i].timestamp:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups
    return [[i] for i in range(len(samples))]


def causal_counts(samples: Sequence[Sample], buckets: int) -> np.ndarray:
    """[N, 6] counts of each row from the rows strictly before it (see the module doc): a row's counts do
    not depend on its own label or on any later row."""
    key = keys(samples, buckets)
    positives = np.zeros((len(FIELDS), buckets))
    rows = np.zeros((len(FIELDS), buckets))
    total = np.zeros(2)
    out = np.zeros((len(samples), COUNTS))
    for group in _instants(samples):
        for i in group:  # read everything before the instant ...
            for j in range(len(FIELDS)):
                if key[i, j] != NO_VALUE:
                    out[i, 2 * j], out[i, 2 * j + 1] = positives[j, key[i, j]], rows[j, key[i, j]]
            out[i, 4:] = total
        for i in group:  # ... then add the instant's labels
            label = float(samples[i].label)
            for j in range(len(FIELDS)):
                if key[i, j] != NO_VALUE:
                    positives[j, key[i, j]] += label
                    rows[j, key[i, j]] += 1.0
            total += (label, 1.0)
    return out


def count_features(counts: torch.Tensor) -> torch.Tensor:
    """[B, 6] counts -> [B, 5] features (see the module doc); the same formula for causal and stored counts."""
    counts = counts.float()
    prior = (counts[:, 4] + 1.0) / (counts[:, 5] + 2.0)
    prior_logit = torch.logit(prior)
    features = []
    for positives, rows in ((counts[:, 0], counts[:, 1]), (counts[:, 2], counts[:, 3])):
        rate = (positives + SMOOTHING * prior) / (rows + SMOOTHING)
        features += [torch.logit(rate.clamp(1e-4, 1 - 1e-4)) - prior_logit, torch.log1p(rows) / 4.0]
    features.append(prior_logit)
    return torch.stack(features, dim=1)


class CountTables(nn.Module):
    """The training part's counts per user / item bucket and of the whole domain, as buffers (in the bundle)."""

    def __init__(self, buckets: int):
        super().__init__()
        self.register_buffer("positives", torch.zeros(len(FIELDS), buckets))
        self.register_buffer("rows", torch.zeros(len(FIELDS), buckets))
        self.register_buffer("total", torch.zeros(2))

    @torch.no_grad()
    def fit(self, samples: Sequence[Sample]) -> None:
        """Count the labelled ``samples`` (the domain's training part); replaces earlier counts."""
        buckets = self.rows.shape[1]
        key = torch.from_numpy(keys(samples, buckets))
        labels = torch.tensor([float(s.label) for s in samples])
        self.positives.zero_()
        self.rows.zero_()
        for j in range(len(FIELDS)):
            seen = key[:, j] != NO_VALUE
            self.positives[j].index_add_(0, key[seen, j], labels[seen])
            self.rows[j].index_add_(0, key[seen, j], torch.ones(int(seen.sum())))
        self.total.copy_(torch.tensor([float(labels.sum()), float(len(samples))]))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, 6] counts of a batch from its ID slots (user bucket, item bucket first); bucket 0 counts as
        never seen."""
        columns = []
        for j in range(len(FIELDS)):
            key = ids[:, j]
            seen = (key != NO_VALUE).to(self.rows.dtype)
            columns += [self.positives[j][key] * seen, self.rows[j][key] * seen]
        total = self.total.expand(len(ids), 2)
        return torch.cat([torch.stack(columns, dim=1), total], dim=1)
