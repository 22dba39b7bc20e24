"""The plugin manager: built-in plugins, third-party entry points, and what they register.

Built-in plugins (modules of ``unictr_plugins``) are registered exactly like
third-party ones. Third-party plugins are found through the entry-point group
``unictr``. ``UNICTR_LOAD_PLUGINS`` (comma-separated distribution or entry-point
names) limits which external plugins load; set it to an empty string to load
none. A plugin that raises while loading, or while one of its hooks runs, is
recorded in :func:`broken_plugins` (``unictr plugins`` shows it with its error)
and never takes the others down.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Optional

import pluggy

from unictr_core import hookspecs

ENTRY_POINT_GROUP = "unictr"
LOAD_PLUGINS_ENV = "UNICTR_LOAD_PLUGINS"

BUILTIN_PLUGINS = (
    "unictr_plugins.minilm_backbone",
    "unictr_plugins.llm_backbones",
    "unictr_plugins.baselines",
    "unictr_plugins.local_domains",
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
    converted: Optional[Callable[[], bool]] = None  # for backbones converted into a cache on first use


@dataclass
class DomainSpec:
    """A domain a plugin provides.

    ``bundle`` is a domain bundle directory (``domain.yaml`` + ``dsn.safetensors``)
    trained against the core ``core_fingerprint``; without a bundle the domain is
    a definition only (template and description) and is predicted zero-shot by
    the general network. ``template`` may be ``None`` when the bundle carries one.
    """

    name: str
    template: Any = None  # unictr_core.prompts.PromptTemplate
    bundle: Optional[Path] = None
    core_fingerprint: Optional[str] = None
    description: str = ""
    plugin: str = ""  # filled in by the registry: the plugin that registered it


_pm: Optional[pluggy.PluginManager] = None
_broken: list[BrokenPlugin] = []
_dist_of: dict[str, str] = {}


def _allowed_external() -> Optional[set[str]]:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _record_broken(name: str, error: str) -> None:
    if not any(b.name == name and b.error == error for b in _broken):
        _broken.append(BrokenPlugin(name, error))


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _allowed_external()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None else ep.name
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        _dist_of[ep.name] = dist_name
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            _record_broken(ep.name, f"{type(exc).__name__}: {exc}")


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
            _record_broken(module_name, f"{type(exc).__name__}: {exc}")
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


def _collect(hook_name: str, **arguments: Any) -> list[tuple[str, tuple]]:
    """Call one ``register_*`` hook on every plugin; a plugin that raises is recorded as broken.

    Each implementation gets ``register`` plus those of ``arguments`` it names.
    Returns ``(plugin name, args given to register)`` in registration order.
    """
    pm = get_plugin_manager()
    found: list[tuple[str, tuple]] = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # pluggy lists last-registered first
        name = impl.plugin_name
        kwargs = {k: v for k, v in arguments.items() if k in impl.argnames}
        collected: list[tuple[str, tuple]] = []
        try:
            impl.function(register=lambda *args, _c=collected, _n=name: _c.append((_n, args)), **kwargs)
        except Exception as exc:
            _record_broken(name, f"{hook_name}: {type(exc).__name__}: {exc}")
            continue  # nothing half-registered from a plugin that failed
        found.extend(collected)
    return found


def backbones() -> dict[str, BackboneSpec]:
    """Registered backbones by name; on a name clash the first registered (built-in) one wins."""
    out: dict[str, BackboneSpec] = {}
    for plugin_name, (spec,) in _collect("register_backbones"):
        spec.plugin = plugin_name
        out.setdefault(spec.name, spec)
    return out


def domain_specs(home: Path) -> list[DomainSpec]:
    """Every domain registration of every plugin (a name may appear more than once).

    Use :mod:`unictr_core.registry` for the resolved view (validation, which
    bundle fits the core, local vs package).
    """
    out: list[DomainSpec] = []
    for plugin_name, args in _collect("register_domains", home=Path(home)):
        if len(args) != 1 or not isinstance(args[0], DomainSpec):
            _record_broken(plugin_name, "register_domains must call register(DomainSpec(...)), "
                                        f"got register{tuple(type(a).__name__ for a in args)}")
            continue
        spec = args[0]
        spec.plugin = plugin_name
        out.append(spec)
    return out


def plugin_rows() -> list[dict[str, Any]]:
    """For ``unictr plugins``: every plugin (built-in, external, broken) with the hooks it implements."""
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = [caller.name for caller in pm.get_hookcallers(plugin) or []]
        rows.append(_plugin_row(name, hooks, None))
    for broken in _broken:
        rows.append(_plugin_row(broken.name, [], broken.error))
    builtin_first = {name: i for i, name in enumerate(BUILTIN_PLUGINS)}
    rows.sort(key=lambda r: (not r["builtin"], builtin_first.get(r["name"], 0), r["name"], r["error"] or ""))
    return rows


def _plugin_row(name: str, hooks: list[str], error: Optional[str]) -> dict[str, Any]:
    dist = _dist_of.get(name)
    version = None
    if dist is not None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version(dist)
        except Exception:
            version = None
    return {"name": name, "builtin": name in BUILTIN_PLUGINS, "distribution": dist, "version": version,
            "hooks": sorted(set(hooks)), "error": error}
