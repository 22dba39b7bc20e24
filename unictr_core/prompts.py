"""Prompt templates: per-domain data (YAML) that renders a sample to text.

A template is a list of *parts* joined together. A part that names a field the
sample lacks is left out, so a missing brand never renders as ``None``. The
history renders as the quoted texts of the user's earlier items, or as
``nothing`` when empty. Domain name first, then user and history, then item,
as in the paper.

YAML form::

    domain: gift_cards
    display_name: Gift Cards
    parts:
      - "{domain_name}:"
      - " The user ID is {user_id}, who clicked {history} recently."
      - " The ID of the current product is {item_id}"
      - ", the title is '{title}'"
      - "."
    history_item: "product '{text}'"
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from unictr_core.schema import Sample

DEFAULT_PARTS = [
    "{domain_name}:",
    " The user ID is {user_id}, who clicked {history} recently.",
    " The ID of the current item is {item_id}",
    ", the title is '{title}'",
    ", the brand is '{brand}'",
    ", the price is {price}",
    ".",
]
EMPTY_HISTORY = "nothing"


def display_name_of(domain: str) -> str:
    return " ".join(word.capitalize() for word in domain.replace("-", "_").split("_") if word)


@dataclass
class PromptTemplate:
    domain: Optional[str] = None  # None: the default template, used for any domain
    display_name: Optional[str] = None
    parts: list[str] = field(default_factory=lambda: list(DEFAULT_PARTS))
    history_item: str = "'{text}'"
    history_separator: str = ", "

    def __post_init__(self) -> None:
        formatter = string.Formatter()
        self._fields: list[list[str]] = []
        for part in self.parts:
            try:
                names = [name for _, name, _, _ in formatter.parse(part) if name]
            except ValueError as exc:
                raise ValueError(f"prompt template part {part!r} is not a valid format string: {exc}") from None
            self._fields.append(names)
        if "{text}" not in self.history_item:
            raise ValueError(f"history_item must contain '{{text}}', got {self.history_item!r}")

    def render(self, sample: Sample, history: Optional[list[str]] = None) -> str:
        """Render ``sample``; ``history`` overrides ``sample.history`` (used to shorten long prompts)."""
        items = sample.history if history is None else history
        values: dict[str, str] = {
            "domain_name": self.display_name or display_name_of(sample.domain),
            "history": self.history_separator.join(self.history_item.format(text=t) for t in items) or EMPTY_HISTORY,
        }
        pieces = []
        for part, names in zip(self.parts, self._fields):
            for name in names:
                if name not in values:
                    value = sample.field_value(name)
                    if value is None:
                        break
                    values[name] = value
            else:
                pieces.append(part.format(**{n: values[n] for n in names}))
        return "".join(pieces).strip()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: v for k, v in data.items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "template") -> "PromptTemplate":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping with 'parts', got {type(data).__name__}")
        allowed = {"domain", "display_name", "parts", "history_item", "history_separator"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"{source}: unknown template keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        parts = data.get("parts", DEFAULT_PARTS)
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts) or not parts:
            raise ValueError(f"{source}: 'parts' must be a non-empty list of strings")
        try:
            return cls(**{k: v for k, v in data.items()})
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "PromptTemplate":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"template file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))


class TemplateSet:
    """Templates by domain, with a default for any domain that has none."""

    def __init__(self, templates: Optional[dict[str, PromptTemplate]] = None, default: Optional[PromptTemplate] = None):
        self.templates = dict(templates or {})
        self.default = default or PromptTemplate()

    def for_domain(self, domain: str) -> PromptTemplate:
        return self.templates.get(domain, self.default)

    def render(self, sample: Sample) -> str:
        return self.for_domain(sample.domain).render(sample)
