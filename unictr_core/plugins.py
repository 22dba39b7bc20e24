"""The plugin manager: built-in plugins, third-party entry points, and what they register.

Built-in plugins (modules of ``unictr_plugins``) are registered exactly like
third-party ones. Third-party plugins are found through the entry-point group
``unictr``. ``UNICTR_LOAD_PLUGINS`` (comma-separated distribution or entry-point
names) limits which external plugins load; set it to an empty string to load
none. A plugin that raises while loading is recorded in :func:`broken_plugins`
and never takes the others down.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Optional

import pluggy

from unictr_core import hookspecs

ENTRY_POINT_GROUP = "unictr"
LOAD_PLUGINS_ENV = "UNICTR_LOAD_PLUGINS"

BUILTIN_PLUGINS = (
    "unictr_plugins.minilm_backbone",
)


@dataclass
class BrokenPlugin:
    name: str
    error: str


@dataclass
class BackboneSpec:
    """A named backbone: ``locate()`` returns a local Hugging Face model directory."""

    name: str
    locate: Callable[[], Path]
    description: str = ""
    license: str = ""
    size: str = ""
    installed: Callable[[], bool] = field(default=lambda: True)
    plugin: str = ""


_pm: Optional[pluggy.PluginManager] = None
_broken: list[BrokenPlugin] = []


def _allowed_external() -> Optional[set[str]]:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _allowed_external()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist is not None else ep.name
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            _dist_of[ep.name] = dist_name
        except Exception as exc:  # a broken plugin must not take the others down
            _broken.append(BrokenPlugin(ep.name, f"{type(exc).__name__}: {exc}"))


_dist_of: dict[str, str] = {}


def get_plugin_manager(reload: bool = False) -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is not None and not reload:
        return _pm
    _broken.clear()
    _dist_of.clear()
    pm = pluggy.PluginManager("unictr")
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except Exception as exc:
            _broken.append(BrokenPlugin(module_name, f"{type(exc).__name__}: {exc}"))
    _load_entry_points(pm)
    _pm = pm
    return pm


def broken_plugins() -> list[BrokenPlugin]:
    get_plugin_manager()
    return list(_broken)


def distribution_of(plugin_name: str) -> Optional[str]:
    """The installed distribution that provides an external plugin, if any."""
    get_plugin_manager()
    return _dist_of.get(plugin_name)


def _collect(hook_name: str) -> list[tuple[str, object]]:
    """Call one ``register_*`` hook on every plugin; a plugin that raises is recorded as broken."""
    pm = get_plugin_manager()
    found: list[tuple[str, object]] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        name = impl.plugin_name
        try:
            impl.function(register=lambda *args, _n=name: found.append((_n, args)))
        except Exception as exc:
            _broken.append(BrokenPlugin(name, f"{hook_name}: {type(exc).__name__}: {exc}"))
    return found


def backbones() -> dict[str, BackboneSpec]:
    out: dict[str, BackboneSpec] = {}
    for plugin_name, (spec,) in _collect("register_backbones"):
        spec.plugin = plugin_name
        out[spec.name] = spec
    return out
