"""Safe YAML loading, with libyaml's C parser when it is installed (registries read many small files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` (no tags, no objects), with the C parser where available."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


def read_file(path: Path, what: str, error: Callable[[str], Exception] = ValueError) -> Any:
    """The parsed YAML of the file ``path``; ``error`` naming ``what`` and the file when it is missing or not YAML."""
    try:
        return safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
