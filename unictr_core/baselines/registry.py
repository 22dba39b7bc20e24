"""Baselines registered through the ``register_baselines`` plugin hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from unictr_core.plugins import _collect, _record_broken


@dataclass
class BaselineInfo:
    """A registered baseline: ``factory(spec: FeatureSpec, **hparams)`` builds a :class:`BaselineModel`."""

    name: str
    factory: Callable
    plugin: str

    @property
    def multi_domain(self) -> bool:
        return bool(getattr(self.factory, "multi_domain", False))

    @property
    def category(self) -> str:
        declared = getattr(self.factory, "category", None)   # e.g. the count-rule floors
        return declared or ("multi-domain" if self.multi_domain else "single-domain")


def baselines() -> dict[str, BaselineInfo]:
    """Every registered baseline by name (built-in plugin first, then third-party ones, in load order)."""
    out: dict[str, BaselineInfo] = {}
    for plugin_name, args in _collect("register_baselines"):
        if len(args) != 2 or not isinstance(args[0], str) or not callable(args[1]):
            _record_broken(plugin_name, "register_baselines must call register(name: str, factory), "
                                        f"got register{tuple(type(a).__name__ for a in args)}")
            continue
        name, factory = args
        out[name] = BaselineInfo(name, factory, plugin_name)
    return out
