"""The sample schema: one CTR example, as every part of UniCTR sees it.

A sample is one (user, item) impression in one domain:

| field       | type            | required | meaning                                               |
|-------------|-----------------|----------|-------------------------------------------------------|
| domain      | str             | yes      | domain name, e.g. ``fashion``                         |
| user_id     | str             | yes      | user identifier                                       |
| item_id     | str             | yes      | item identifier                                       |
| label       | 0 or 1          | for training / evaluation | 1 = click (positive), 0 = no click   |
| timestamp   | int             | no       | event time (seconds); used by time-ordered splits     |
| title       | str             | no       | item title                                            |
| brand       | str             | no       | item brand                                            |
| price       | str             | no       | item price as text, e.g. ``25.00``                    |
| history     | list[str]       | no       | texts of the user's earlier positive items, oldest first |
| extra       | dict[str, str]  | no       | free extra fields, usable by prompt templates         |

Any other key in a JSONL object (or column in a CSV file) is kept in ``extra``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

CORE_FIELDS = ("domain", "user_id", "item_id", "label", "timestamp", "title", "brand", "price", "history", "extra")
REQUIRED_FIELDS = ("domain", "user_id", "item_id")


class DataError(ValueError):
    """A bad input row: says which file, which line, which field and what was expected."""

    def __init__(self, source: str, line: Optional[int], field_name: Optional[str], message: str):
        self.source = source
        self.line = line
        self.field = field_name
        self.reason = message
        where = str(source)
        if line is not None:
            where += f", line {line}"
        if field_name is not None:
            where += f", field '{field_name}'"
        super().__init__(f"{where}: {message}")


@dataclass
class Sample:
    domain: str
    user_id: str
    item_id: str
    label: Optional[int] = None
    timestamp: Optional[int] = None
    title: Optional[str] = None
    brand: Optional[str] = None
    price: Optional[str] = None
    history: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain, "user_id": self.user_id, "item_id": self.item_id}
        for name in ("label", "timestamp", "title", "brand", "price"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["history"] = list(self.history)
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def field_value(self, name: str) -> Optional[str]:
        """A text field by name (core field or extra), ``None`` when absent or empty."""
        if name in ("domain", "user_id", "item_id", "title", "brand", "price"):
            value = getattr(self, name)
        elif name in ("label", "timestamp"):
            value = getattr(self, name)
            value = None if value is None else str(value)
        else:
            value = self.extra.get(name)
        if value is None:
            return None
        value = str(value).strip()
        return value or None


_PRICE_NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*")


def price_value(text: Optional[str]) -> Optional[float]:
    """The one reading of a sample's price as a number: the first number in its text (``"$1,299.00"`` ->
    1299.0; ``"$5 - $10"`` -> 5.0; an adapter's range ``"10.00-20.00"`` -> 10.0), else ``None``."""
    if text is None:
        return None
    match = _PRICE_NUMBER.search(str(text))
    if match is None:
        return None
    try:
        value = float(match.group(0).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
