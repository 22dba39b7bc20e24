"""Behaviour histories: each sample sees the user's earlier positive items.

``attach_histories(events)`` sets ``sample.history`` to the texts of the same
user's last ``k`` positive items that happened STRICTLY earlier in time, across
all domains, oldest first. Events with the same timestamp never see each other,
so nothing from the present or the future leaks into a prompt. Ties are broken
by input order, which makes the result deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

from unictr_core.data.schema import DataError, Sample


def default_text(sample: Sample) -> Optional[str]:
    """The text that stands for an item in a history: its title, else its id."""
    return sample.field_value("title") or sample.item_id


def default_is_positive(sample: Sample) -> bool:
    return sample.label == 1


def attach_histories(events: Sequence[Sample], k: int = 5,
                     text_of: Callable[[Sample], Optional[str]] = default_text,
                     is_positive: Callable[[Sample], bool] = default_is_positive) -> Sequence[Sample]:
    """Set every sample's ``history`` in place and return ``events``.

    ``k`` is the number of most recent earlier positives kept; ``text_of`` maps a
    sample to its history text (``None``/empty texts are skipped); ``is_positive``
    decides which events enter later histories. Every event needs a timestamp.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    by_user: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(events):
        if sample.timestamp is None:
            raise DataError("<events>", index + 1, "timestamp",
                            f"every event needs a timestamp to build histories "
                            f"(user {sample.user_id!r}, item {sample.item_id!r})")
        by_user[sample.user_id].append(index)

    for indices in by_user.values():
        indices.sort(key=lambda i: (events[i].timestamp, i))
        earlier: list[str] = []
        start = 0
        while start < len(indices):
            stop = start
            moment = events[indices[start]].timestamp
            while stop < len(indices) and events[indices[stop]].timestamp == moment:
                stop += 1
            seen = earlier[-k:] if k else []
            group = [events[i] for i in indices[start:stop]]
            for sample in group:
                sample.history = list(seen)
            for sample in group:
                if is_positive(sample):
                    text = text_of(sample)
                    if text is not None and str(text).strip():
                        earlier.append(str(text))
            del earlier[:-k or len(earlier)]
            start = stop
    return events
