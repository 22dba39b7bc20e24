"""ID and categorical features for the baseline models, fitted on the training split only.

Every sample becomes a row of categorical indices, one per field:

* ``user_id``, ``item_id``, ``domain``, ``brand``
* ``price`` as a quantile bucket (bin edges fitted on the training prices)
* categorical ``extra`` fields (auto-detected on the training split, or named
  explicitly); for fields whose name contains ``genre`` only the first genre
  is kept (``"Comedy|Drama"`` -> ``"Comedy"``)

plus the user's history: the last ``max_history`` history texts, each mapped
through a vocabulary of the texts seen in training (history texts and item
titles), so the same item gets the same id wherever it occurs.

Index conventions for every vocabulary: ``0`` = value missing (and padding
for the history), ``1`` = value present but never seen in training (OOV),
``2..`` = values seen in training.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from unictr_core.config import BaselineSettings
from unictr_core.data.fields import categorical_fields
from unictr_core.data.schema import Sample, price_value as parse_price

MISSING = 0
OOV = 1
FIRST_ID = 2

BASE_FIELDS = ("user_id", "item_id", "domain", "brand", "price")
_GENRE_SPLIT = re.compile(r"[|,;/]")


def _extra_value(name: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    value = str(value).strip()
    if "genre" in name.lower():
        value = _GENRE_SPLIT.split(value)[0].strip()
    return value or None


class Vocabulary:
    """Value -> index, fitted once; unseen values map to :data:`OOV`, missing ones to :data:`MISSING`."""

    def __init__(self, values: Iterable[str], min_count: int = 1):
        counts = Counter(v for v in values if v is not None)
        kept = sorted(v for v, c in counts.items() if c >= min_count)
        self.index = {v: i + FIRST_ID for i, v in enumerate(kept)}

    def __len__(self) -> int:
        """Size of the embedding table needed (including the missing and OOV slots)."""
        return len(self.index) + FIRST_ID

    def lookup(self, value: Optional[str]) -> int:
        if value is None:
            return MISSING
        return self.index.get(value, OOV)


@dataclass
class FeatureSpec:
    """What a model needs to size its embedding tables."""

    field_names: list[str]
    field_sizes: list[int]
    history_size: int
    max_history: int
    domains: list[str]

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def num_domains(self) -> int:
        return len(self.domains)


@dataclass
class EncodedData:
    """Encoded samples: ``fields`` [N, F], ``history`` [N, K], ``domain`` [N] (-1 = not a training domain)."""

    fields: np.ndarray
    history: np.ndarray
    domain: np.ndarray
    labels: np.ndarray
    domain_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.fields.shape[0])

    def subset(self, rows: np.ndarray) -> "EncodedData":
        return EncodedData(self.fields[rows], self.history[rows], self.domain[rows], self.labels[rows],
                           self.domain_names)


class FeatureEncoder:
    """Fits vocabularies and price bins on training samples, then encodes any samples the same way."""

    def __init__(self, extra_fields: Optional[Sequence[str]] = None, max_history: int = BaselineSettings.max_history, price_bins: int = 10,
                 max_extra_cardinality: int = 1000, max_extra_length: int = 64):
        self.extra_fields_requested = None if extra_fields is None else list(extra_fields)
        self.max_history = max_history
        self.price_bins = price_bins
        self.max_extra_cardinality = max_extra_cardinality
        self.max_extra_length = max_extra_length
        self.fitted = False

    # ----------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Sample]) -> "FeatureEncoder":
        if not train:
            raise ValueError("FeatureEncoder.fit: the training split is empty")
        self.domains = sorted({s.domain for s in train})
        self.extra_fields = (categorical_fields(train, _extra_value, self.max_extra_cardinality, self.max_extra_length)
                             if self.extra_fields_requested is None
                             else list(self.extra_fields_requested))
        prices = np.array([p for p in (parse_price(s.price) for s in train) if p is not None], dtype=np.float64)
        if prices.size:
            qs = np.quantile(prices, np.linspace(0, 1, self.price_bins + 1)[1:-1])
            self.price_edges = np.unique(qs)
        else:
            self.price_edges = np.array([], dtype=np.float64)
        self.field_names = list(BASE_FIELDS) + [f"extra:{name}" for name in self.extra_fields]
        self.vocabs = {
            name: Vocabulary(self._raw_value(s, name) for s in train) for name in self.field_names
        }
        history_texts = [t for s in train for t in s.history[-self.max_history:]]
        history_texts += [s.title for s in train if s.title]
        self.history_vocab = Vocabulary(history_texts)
        self.fitted = True
        return self

    def _raw_value(self, sample: Sample, name: str) -> Optional[str]:
        if name == "price":
            price = parse_price(sample.price)
            if price is None:
                return None
            return f"bin{int(np.searchsorted(self.price_edges, price, side='right'))}"
        if name.startswith("extra:"):
            key = name[len("extra:"):]
            return _extra_value(key, sample.extra.get(key))
        return sample.field_value(name)

    # ---------------------------------------------------------------- encoding
    def spec(self) -> FeatureSpec:
        self._check_fitted()
        return FeatureSpec(
            field_names=list(self.field_names),
            field_sizes=[len(self.vocabs[name]) for name in self.field_names],
            history_size=len(self.history_vocab),
            max_history=self.max_history,
            domains=list(self.domains),
        )

    def transform(self, samples: Sequence[Sample]) -> EncodedData:
        self._check_fitted()
        n, k = len(samples), self.max_history
        fields = np.zeros((n, len(self.field_names)), dtype=np.int64)
        history = np.zeros((n, k), dtype=np.int64)
        domain = np.full(n, -1, dtype=np.int64)
        labels = np.zeros(n, dtype=np.float32)
        domain_index = {d: i for i, d in enumerate(self.domains)}
        for row, s in enumerate(samples):
            for col, name in enumerate(self.field_names):
                fields[row, col] = self.vocabs[name].lookup(self._raw_value(s, name))
            recent = s.history[-k:] if k > 0 else []
            for col, text in enumerate(recent):
                history[row, col] = self.history_vocab.lookup(text)
            domain[row] = domain_index.get(s.domain, -1)
            labels[row] = float(s.label) if s.label is not None else np.nan
        return EncodedData(fields, history, domain, labels, list(self.domains))

    def describe(self) -> dict:
        """A JSON-friendly summary (field names and vocabulary sizes), for benchmark reports."""
        spec = self.spec()
        return {
            "fitted_on": "train split only",
            "fields": dict(zip(spec.field_names, spec.field_sizes)),
            "history_vocab": spec.history_size,
            "max_history": spec.max_history,
            "price_bin_edges": [float(x) for x in self.price_edges],
            "domains": spec.domains,
        }

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("FeatureEncoder: call fit(train) before transform/spec")
