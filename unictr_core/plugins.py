"""The plugin manager: built-in plugins, third-party entry points, and what they register.

Built-in plugins are registered exactly like third-party ones, through entry
points: the group ``unictr.builtin`` (this distribution's own plugins, always
loaded; no module of ``unictr_core`` names them) and the group ``unictr``
(third-party plugins). ``UNICTR_LOAD_PLUGINS`` (comma-separated distribution or entry-point
names) limits which external plugins load; set it to an empty string to load
none. A plugin that raises while loading, or while one of its hooks runs, is
recorded in :func:`broken_plugins` (``unictr plugins`` shows it with its error)
and never takes the others down.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import threading
from dataclasses import dataclass, field
from importlib import metadata
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pluggy

from unictr_core import hookspecs

ENTRY_POINT_GROUP = "unictr"
BUILTIN_GROUP = "unictr.builtin"
LOAD_PLUGINS_ENV = "UNICTR_LOAD_PLUGINS"


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
    template: Any = None  # unictr_core.data.prompts.PromptTemplate
    bundle: Optional[Path] = None
    core_fingerprint: Optional[str] = None
    description: str = ""
    plugin: str = ""  # filled in by the registry: the plugin that registered it
    source: str = ""  # what `domain list` shows as the source of a registration that is neither a bundle of
    #                   the home nor of an installed package (e.g. "shipped definition"); default "plugin <name>"


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


class _UserInterrupt:
    """Tells a Ctrl-C of the user from a KeyboardInterrupt that plugin code raised itself.

    While plugin code runs, SIGINT sets ``pressed`` before raising; a KeyboardInterrupt
    caught without it came from the plugin and only breaks that plugin.
    """

    def __init__(self) -> None:
        self.pressed = False

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            self.pressed = True
            raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except (ValueError, OSError):  # not allowed here: no way to tell, treat as the user's
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _guarded(name: str, what: str, action: Callable[[], Any]) -> bool:
    """Run plugin code; any exception (SystemExit too) marks the plugin broken. True when it succeeded.

    Only a KeyboardInterrupt that came from the user (SIGINT) propagates.
    """
    interrupt = _UserInterrupt()
    try:
        with interrupt.watching():
            action()
        return True
    except KeyboardInterrupt as exc:
        if interrupt.pressed:
            raise
        _record_broken(name, f"{what}KeyboardInterrupt raised by the plugin itself{_detail(exc)}")
    except BaseException as exc:  # noqa: BLE001 - a plugin must never take the command down
        _record_broken(name, f"{what}{type(exc).__name__}{_detail(exc)}")
    return False


def _detail(exc: BaseException) -> str:
    text = str(exc)
    return f": {text}" if text else ""


def builtin_plugins() -> tuple[str, ...]:
    """Names of the built-in plugins, in registration order (entry points of ``unictr.builtin``, sorted by the
    number that prefixes their name there, e.g. ``10-minilm_backbone``)."""
    found = metadata.entry_points(group=BUILTIN_GROUP)  # not `entry_points`: tests replace that one with fakes
    return tuple(ep.value for ep in sorted(found, key=lambda ep: ep.name))


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _allowed_external()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None else ep.name
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        _dist_of[ep.name] = dist_name
        _guarded(ep.name, "", lambda ep=ep: pm.register(ep.load(), name=ep.name))


def get_plugin_manager(reload: bool = False) -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is not None and not reload:
        return _pm
    _broken.clear()
    _dist_of.clear()
    pm = pluggy.PluginManager("unictr")
    pm.add_hookspecs(hookspecs)
    if not builtin_plugins():
        _record_broken(BUILTIN_GROUP, "no built-in plugins are registered: the installed metadata of unictr predates "
                       "them; reinstall it (`pip install -e .` in the source tree, or scripts/install.sh)")
    for module_name in builtin_plugins():
        _guarded(module_name, "", lambda m=module_name: pm.register(importlib.import_module(m), name=m))
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

        def call(impl=impl, name=name, kwargs=kwargs, collected=collected) -> None:
            impl.function(register=lambda *args: collected.append((name, args)), **kwargs)

        if _guarded(name, f"{hook_name}: ", call):
            found.extend(collected)  # nothing half-registered from a plugin that failed
    return found


def _specs(hook_name: str, spec_type: type, **arguments: Any) -> list:
    """The ``spec_type`` objects registered through ``hook_name``, each stamped with its plugin's name; a plugin
    that registers anything else is marked broken."""
    out = []
    for plugin_name, args in _collect(hook_name, **arguments):
        if len(args) != 1 or not isinstance(args[0], spec_type) or not isinstance(args[0].name, str):
            _record_broken(plugin_name, f"{hook_name} must call register({spec_type.__name__}(...)), "
                                        f"got register{tuple(type(a).__name__ for a in args)}")
            continue
        args[0].plugin = plugin_name
        out.append(args[0])
    return out


def backbones() -> dict[str, BackboneSpec]:
    """Registered backbones by name; on a name clash the first registered (built-in) one wins."""
    out: dict[str, BackboneSpec] = {}
    for spec in _specs("register_backbones", BackboneSpec):
        out.setdefault(spec.name, spec)
    return out


def domain_specs(home: Path) -> list[DomainSpec]:
    """Every domain registration of every plugin (a name may appear more than once).

    Use :mod:`unictr_core.store.registry` for the resolved view (validation, which
    bundle fits the core, local vs package).
    """
    return _specs("register_domains", DomainSpec, home=Path(home))


def domain_plugin_problems() -> list[str]:
    """One line per broken plugin that may have provided domains (it failed to load, its ``register_domains``
    raised, or it registered something other than DomainSpecs): the registry lists them, so that a domain that
    vanished with its plugin is explained wherever domains are shown."""
    other_hooks = ("register_backbones", "register_baselines")
    return [f"plugin '{b.name}' is broken, so the domains it provides are missing (predicted zero-shot, if "
            f"known at all): {b.error}"
            for b in broken_plugins() if not b.error.startswith(other_hooks)]


def plugin_rows(home: Optional[Path] = None) -> list[dict[str, Any]]:
    """For ``unictr plugins``: every plugin (built-in, external, broken) with the hooks it implements.

    The ``register_*`` hooks are called (domains against ``home``, default an empty
    folder), so a plugin whose hook raises or registers garbage is listed broken with
    its error; one row per plugin.
    """
    pm = get_plugin_manager()
    backbones()
    if home is None:
        import tempfile

        with tempfile.TemporaryDirectory() as empty:
            domain_specs(Path(empty))
    else:
        domain_specs(Path(home))
    errors: dict[str, list[str]] = {}
    for broken in _broken:
        errors.setdefault(broken.name, []).append(broken.error)
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = [caller.name for caller in pm.get_hookcallers(plugin) or []]
        rows.append(_plugin_row(name, hooks, "; ".join(errors.pop(name, [])) or None))
    for name, messages in errors.items():
        rows.append(_plugin_row(name, [], "; ".join(messages)))
    builtin_first = {name: i for i, name in enumerate(builtin_plugins())}
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
    return {"name": name, "builtin": name in builtin_plugins(), "distribution": dist, "version": version,
            "hooks": sorted(set(hooks)), "error": error}
