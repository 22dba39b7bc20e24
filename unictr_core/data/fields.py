"""Which ``extra`` fields of a split are categorical: the one detection rule of the ID baselines' features and of
Uni-CTR's per-field ID embeddings (``ModelConfig.id_fields = ["auto"]``)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from unictr_core.data.schema import Sample

MAX_CARDINALITY = 1000  # more distinct values than this: an identifier or free text, not a category
MAX_LENGTH = 64         # a longer value anywhere: free text


def plain_value(name: str, raw) -> Optional[str]:
    """``raw`` as a stripped string, ``None`` when absent or empty."""
    value = None if raw is None else str(raw).strip()
    return value or None


def categorical_fields(samples: Sequence[Sample], value: Callable[[str, object], Optional[str]] = plain_value,
                       max_cardinality: int = MAX_CARDINALITY, max_length: int = MAX_LENGTH) -> list[str]:
    """The sorted names of the ``extra`` fields of ``samples`` whose values (as ``value(name, raw)`` gives them)
    are never longer than ``max_length`` and take 2 .. ``max_cardinality`` distinct values."""
    seen: dict[str, set] = {}
    too_long: set[str] = set()
    for sample in samples:
        for name, raw in sample.extra.items():
            text = value(name, raw)
            if text is None:
                continue
            if len(text) > max_length:
                too_long.add(name)
            seen.setdefault(name, set()).add(text)
    return sorted(name for name, values in seen.items() if name not in too_long and 1 < len(values) <= max_cardinality)
