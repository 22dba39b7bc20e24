"""A model from a home: its core with every compatible DSN the domain registry serves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from unictr_core.store import snapshots
from unictr_core.store.artifact import load_core, load_domain_bundle
from unictr_core.store.layout import CORE_DIR, MANIFEST, ArtifactError
from unictr_core.store.registry import Registry


def load_model(home: Path, domains: Optional[list[str]] = None, core=None, registry: Optional[Registry] = None):
    """The home's core with every compatible DSN the registry serves; returns (model, notes).

    Domains without a usable DSN keep the template the registry knows for them
    (shipped definition or package), and the general network predicts them
    (zero-shot). ``domains`` limits which domains are attached. ``core``: an
    already loaded core without DSNs to attach them to (default: load it);
    ``registry``: the home's registry, discovered here unless it was (default: one is opened); each bundle
    it checked is attached with the record it checked, not checked again.
    """
    home = Path(home)
    registry = Registry.open(home) if registry is None else registry.discover()
    try:
        return _load_model(home, domains, core, registry)
    except (ArtifactError, OSError):
        snapshots.ensure_alive(registry.root)  # "retired, retry" rather than what its absence looks like
        raise


def _load_model(home: Path, domains: Optional[list[str]], core, registry: Registry):
    snapshots.ensure_alive(registry.root)
    if not (registry.root / CORE_DIR / MANIFEST).exists():
        raise ArtifactError(f"no trained core in {home} (expected {home / CORE_DIR / MANIFEST}); run `unictr train`")
    model = load_core(registry.root / CORE_DIR) if core is None else core
    notes = list(registry.problems)
    for name, entry in registry.entries.items():
        if domains is not None and name not in domains:
            continue
        if entry.has_dsn and entry.compatible:
            try:
                load_domain_bundle(model, entry.bundle, entry.record)  # the registry checked its files
                continue
            except (ArtifactError, ValueError, RuntimeError) as exc:
                notes.append(f"domain '{name}' ({entry.source}) is broken and predicted zero-shot: {exc}")
            except Exception as exc:  # noqa: BLE001 - one bundle never takes the others down
                notes.append(f"domain '{name}' ({entry.source}) is broken and predicted zero-shot: "
                             f"{type(exc).__name__}: {exc}")
        elif entry.problem is not None:
            notes.append(f"domain '{name}' ({entry.source}) is broken and predicted zero-shot: {entry.problem}")
        elif entry.bundle is not None:
            notes.append(
                f"domain bundle '{name}' ({entry.source}, {entry.bundle}) was trained against core "
                f"{str(entry.core_fingerprint)[:12]}…, but the loaded core is {str(registry.core_fingerprint)[:12]}…; "
                f"'{name}' is predicted zero-shot; retrain it with `unictr domain add {name}`")
        if entry.template is not None:
            model.templates.templates[name] = entry.template
    snapshots.ensure_alive(registry.root)  # bundles that vanished with a retired snapshot are not "broken"
    return model, notes
