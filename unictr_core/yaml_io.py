"""Safe YAML loading, with libyaml's C parser when it is installed (registries read many small files)."""

from __future__ import annotations

from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` (no tags, no objects), with the C parser where available."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
