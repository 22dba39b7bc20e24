"""Hardened YAML reading: every YAML file UniCTR reads from a home, a plugin or a user goes through here.

A record is small and flat, so anything else is refused before a value is built:

- size: at most :data:`MAX_BYTES` bytes;
- encoding: UTF-8 (the error names the line of the first bad byte);
- no anchors or aliases (``&a`` / ``*a``): they are what a "billion laughs" bomb is built from, and no record
  of UniCTR needs them;
- nesting: at most :data:`MAX_DEPTH` levels of mappings and sequences;
- no tags that build objects (a safe loader, with libyaml's C parser where installed).

The events are checked first (a streaming parse builds no values), so a hostile file costs one pass over at
most :data:`MAX_BYTES` bytes. Every refusal is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32


class YamlRefused(ValueError):
    """YAML text refused by the hardened reader (the message says why, without the file's name)."""


def _check_events(text: str) -> None:
    """YamlRefused on an anchor, an alias or nesting deeper than MAX_DEPTH; yaml.YAMLError on bad syntax."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise YamlRefused(f"uses a YAML anchor or alias ({_where(event)}), which UniCTR files never need "
                              "(refused: aliases can expand exponentially)")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(f"is nested deeper than {MAX_DEPTH} levels ({_where(event)})")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _where(event: yaml.Event) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


def safe_load(text: str) -> Any:
    """The value of YAML ``text``: safe loader, no anchors / aliases, at most MAX_DEPTH levels.

    Raises :class:`YamlRefused` or ``yaml.YAMLError``.
    """
    if len(text) > MAX_BYTES:
        raise YamlRefused(f"is larger than the limit of {MAX_BYTES} characters")
    _check_events(text)
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


def decode(data: bytes) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped); YamlRefused naming the line of the first bad byte."""
    if len(data) > MAX_BYTES:
        raise YamlRefused(f"is larger than the limit of {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlRefused(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}: {exc.reason})") \
            from None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlRefused(f"is larger than the limit of {MAX_BYTES} bytes")
    return data


def read_file(path: Path, what: str, error: Callable[[str], Exception] = ValueError) -> Any:
    """The parsed YAML of the file ``path``; ``error`` (one line naming ``what`` and the file) when it is missing,
    unreadable, too large, not UTF-8, not YAML, or uses aliases / deep nesting."""
    try:
        return safe_load(decode(_read_bytes(Path(path))))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except YamlRefused as exc:
        raise error(f"{what} {path} {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {_one_line(exc)}") from None
    except (OSError, RecursionError) as exc:
        raise error(f"{what} {path} cannot be read: {type(exc).__name__}: {exc}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
