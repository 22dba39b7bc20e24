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

The placeholder ``{extras}`` renders every ``extra`` field of the sample that
no other part names, one short clause each with a readable name, e.g.
``", the age band is 25-34, the occupation is writer"``. The default template
ends with it, so a user's own columns are never silently dropped.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from unictr_core.data.schema import CORE_FIELDS, Sample

DEFAULT_PARTS = [
    "{domain_name}:",
    " The user ID is {user_id}, who clicked {history} recently.",
    " The ID of the current item is {item_id}",
    ", the title is '{title}'",
    ", the brand is '{brand}'",
    ", the price is {price}",
    "{extras}",
    ".",
]
EMPTY_HISTORY = "nothing"
EXTRAS = "extras"
#: fields a template computes itself (not read from the sample)
COMPUTED = ("domain_name", "history", EXTRAS)
#: longest text of one generic ``{extras}`` clause value
EXTRA_VALUE_CHARS = 80


def readable_name(name: str) -> str:
    """``"age_band"`` -> ``"age band"``, ``"releaseYear"`` -> ``"release year"``."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return " ".join(re.sub(r"[^0-9A-Za-z]+", " ", text).lower().split()) or str(name)


def _short(value: str, limit: int = EXTRA_VALUE_CHARS) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def display_name_of(domain: str) -> str:
    return " ".join(word.capitalize() for word in domain.replace("-", "_").split("_") if word)


def _plain_fields(text: str, what: str) -> list[str]:
    """The ``{name}`` fields of a format string; ValueError for anything else a format string can do
    (``{}``, ``{0}``, ``{title.attr}``, ``{title[0]}``, ``{title!r}``, ``{title:>999999999}``): rendering must
    never fail or allocate at a row's whim."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{what} {text!r} is not a valid format string: {exc}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion is not None:
            raise ValueError(f"{what} {text!r}: field {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain {{name}} (no position, attribute, "
                             "index, conversion or format spec)")
        names.append(name)
    return names


@dataclass
class PromptTemplate:
    domain: Optional[str] = None  # None: the default template, used for any domain
    display_name: Optional[str] = None
    parts: list[str] = field(default_factory=lambda: list(DEFAULT_PARTS))
    history_item: str = "'{text}'"
    history_separator: str = ", "

    def __post_init__(self) -> None:
        for name, value in (("domain", self.domain), ("display_name", self.display_name),
                            ("history_item", self.history_item), ("history_separator", self.history_separator)):
            if not (isinstance(value, str) or (value is None and name in ("domain", "display_name"))):
                raise ValueError(f"'{name}' must be text, got {type(value).__name__}")
        if not isinstance(self.parts, list) or not all(isinstance(p, str) for p in self.parts):
            raise ValueError("'parts' must be a list of strings")
        self._fields: list[list[str]] = [_plain_fields(part, "prompt template part") for part in self.parts]
        if set(_plain_fields(self.history_item, "history_item")) != {"text"}:
            raise ValueError(f"history_item must contain '{{text}}' and no other field, got {self.history_item!r}")

    @property
    def named_fields(self) -> list[str]:
        """The sample fields the parts name (in order, without the computed ones)."""
        seen = [n for names in self._fields for n in names if n not in COMPUTED]
        return list(dict.fromkeys(seen))

    @property
    def renders_extras(self) -> bool:
        return any(EXTRAS in names for names in self._fields)

    def extras_text(self, sample: Sample) -> str:
        """The generic clauses for the sample's extra fields no part names (``""`` when none)."""
        named = set(self.named_fields)
        clauses = []
        for name in sorted(sample.extra):
            value = sample.field_value(name) if name not in named else None
            if value is not None:
                clauses.append(f", the {readable_name(name)} is {_short(value)}")
        return "".join(clauses)

    def render(self, sample: Sample, history: Optional[list[str]] = None) -> str:
        """Render ``sample``; ``history`` overrides ``sample.history`` (used to shorten long prompts)."""
        items = sample.history if history is None else history
        values: dict[str, str] = {
            "domain_name": self.display_name or display_name_of(sample.domain),
            "history": self.history_separator.join(self.history_item.format(text=t) for t in items) or EMPTY_HISTORY,
        }
        if self.renders_extras:
            values[EXTRAS] = self.extras_text(sample)
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
        """The template in a YAML file (see :func:`read_template_file`)."""
        return read_template_file(path)[0]


def read_template_file(path: str | Path, name: Optional[str] = None, what: str = "template file"
                       ) -> tuple["PromptTemplate", str]:
    """``(template, description)`` from a YAML file: a template, or a domain definition (a mapping with
    ``template:`` and optionally ``name:`` and ``description:``). The template's ``domain`` defaults to
    ``name``, else the definition's name. ``what`` names the file in errors (e.g. ``--template``)."""
    from unictr_core.data import yaml_io

    path = Path(path)
    data = yaml_io.read_file(path, what)
    return template_from_data(data, name, f"{what} {path}")


def template_from_data(data: Any, name: Optional[str], source: str) -> tuple["PromptTemplate", str]:
    """``(template, description)`` from parsed YAML: a template mapping or a domain definition (see
    :func:`read_template_file`); ``source`` names it in errors."""
    description = ""
    if isinstance(data, dict) and "template" in data:
        description = str(data.get("description") or "")
        name = name or (str(data["name"]) if data.get("name") is not None else None)
        data = data["template"] or {}
    if isinstance(data, dict) and name is not None:
        data = dict(data)
        data.setdefault("domain", name)
    return PromptTemplate.from_dict(data, source=source), description


class TemplateSet:
    """Templates by domain, with a default for any domain that has none."""

    def __init__(self, templates: Optional[dict[str, PromptTemplate]] = None, default: Optional[PromptTemplate] = None):
        self.templates = dict(templates or {})
        self.default = default or PromptTemplate()

    def for_domain(self, domain: str) -> PromptTemplate:
        return self.templates.get(domain, self.default)

    def render(self, sample: Sample) -> str:
        return self.for_domain(sample.domain).render(sample)


# ----------------------------------------------------------------------------
# which fields a template uses
# ----------------------------------------------------------------------------

#: sample fields that are never prompt input (the target)
NOT_INPUT = ("label",)


def present_fields(samples: Iterable[Sample]) -> list[str]:
    """Input fields that hold a value in at least one of ``samples`` (core fields first, then extras, sorted)."""
    core, extra = set(), set()
    for s in samples:
        for name in ("domain", "user_id", "item_id", "timestamp", "title", "brand", "price"):
            if s.field_value(name) is not None:
                core.add(name)
        if s.history:
            core.add("history")
        extra.update(k for k in s.extra if s.field_value(k) is not None)
    order = ("domain", "user_id", "item_id", "history", "title", "brand", "price", "timestamp")
    return [n for n in order if n in core] + sorted(extra - set(order))


def used_fields(template: PromptTemplate, fields: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``fields`` into those ``template`` renders and those it ignores."""
    named = set(template.named_fields)
    computed = {n for names in template._fields for n in names if n in COMPUTED}
    used, ignored = [], []
    for name in fields:
        renders = (name in named or (name == "domain" and "domain_name" in computed)
                   or (name == "history" and "history" in computed)
                   or (template.renders_extras and name not in CORE_FIELDS))
        (used if renders else ignored).append(name)
    return used, ignored


def field_usage(templates: TemplateSet, samples: Sequence[Sample]) -> list[tuple[list[str], list[str], list[str]]]:
    """Per group of domains sharing one template: ``(domains, fields used, fields ignored)``."""
    by_domain: dict[str, list[Sample]] = {}
    for s in samples:
        by_domain.setdefault(s.domain, []).append(s)
    groups: dict[tuple, list[str]] = {}
    for domain in sorted(by_domain):
        template = templates.for_domain(domain)
        used, ignored = used_fields(template, present_fields(by_domain[domain]))
        groups.setdefault((id(template), tuple(used), tuple(ignored)), []).append(domain)
    return [(domains, list(key[1]), list(key[2])) for key, domains in groups.items()]
