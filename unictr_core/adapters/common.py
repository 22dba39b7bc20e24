"""What every adapter shares: domain names from raw labels, de-duplication, and the report of a prepare run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

from unictr_core.data.tables import format_table

T = TypeVar("T")


def snake_case(name: str) -> str:
    """A domain name from a raw category label: ``"Gift_Cards"`` -> ``"gift_cards"``,
    ``"Children's"`` -> ``"childrens"``, ``"Sci-Fi"`` -> ``"sci_fi"``."""
    text = re.sub(r"['\u2019]", "", str(name))
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    if not text:
        raise ValueError(f"cannot make a domain name from {name!r}")
    return text


def drop_duplicates(rows: Iterable[T], key: Callable[[T], Hashable]) -> tuple[list[T], list[T]]:
    """Keep the first row of each ``key``; return ``(kept, dropped)`` in input order."""
    seen: set = set()
    kept: list[T] = []
    dropped: list[T] = []
    for row in rows:
        k = key(row)
        if k in seen:
            dropped.append(row)
        else:
            seen.add(k)
            kept.append(row)
    return kept, dropped


@dataclass
class DomainReport:
    """Counts for one domain of a prepared dataset."""

    domain: str
    train: int = 0
    valid: int = 0
    test: int = 0
    positives: int = 0
    duplicates_dropped: int = 0
    holdout: bool = False

    @property
    def rows(self) -> int:
        return self.train + self.valid + self.test

    @property
    def positive_rate(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")


@dataclass
class PrepareReport:
    """What an adapter wrote: per-domain counts plus free-text notes."""

    out_dir: str
    domains: list[DomainReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A fixed-width per-domain summary table (one line per domain plus a total)."""
        header = ("domain", "train", "valid", "test", "pos_rate", "dups_dropped", "holdout")
        lines = [header]
        for d in self.domains:
            lines.append((d.domain, str(d.train), str(d.valid), str(d.test), f"{d.positive_rate:.3f}",
                          str(d.duplicates_dropped), "yes" if d.holdout else ""))
        total = DomainReport("TOTAL", sum(d.train for d in self.domains), sum(d.valid for d in self.domains),
                             sum(d.test for d in self.domains), sum(d.positives for d in self.domains),
                             sum(d.duplicates_dropped for d in self.domains))
        lines.append((total.domain, str(total.train), str(total.valid), str(total.test),
                      f"{total.positive_rate:.3f}", str(total.duplicates_dropped), ""))
        return format_table(header, lines[1:])


def build_report(out_dir: str, splits: dict[str, Sequence], duplicates: dict[str, int],
                 holdout: Sequence[str], notes: Sequence[str] = ()) -> PrepareReport:
    """Count rows per domain and split (``splits`` maps split name -> samples)."""
    by_domain: dict[str, DomainReport] = {}
    for split_name, samples in splits.items():
        for s in samples:
            rep = by_domain.setdefault(s.domain, DomainReport(s.domain))
            setattr(rep, split_name, getattr(rep, split_name) + 1)
            rep.positives += int(s.label == 1)
    for name, count in duplicates.items():
        by_domain.setdefault(name, DomainReport(name)).duplicates_dropped = count
    for name in holdout:
        if name in by_domain:
            by_domain[name].holdout = True
    return PrepareReport(out_dir=str(out_dir), domains=[by_domain[k] for k in sorted(by_domain)], notes=list(notes))
