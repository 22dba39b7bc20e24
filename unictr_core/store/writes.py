"""The home's writes: a trained core with its bundles, one bundle committed or removed; each one snapshot switch
under the home's lock (:mod:`unictr_core.store.snapshots`), so a reader sees the old home or the new one."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

from unictr_core.data.data_io import validate_domain_name
from unictr_core.store import snapshots
from unictr_core.store.artifact import save_core, save_domain_bundle
from unictr_core.store.layout import CORE_DIR, DOMAINS_DIR
from unictr_core.store.registry import DomainEntry, Registry, RegistryError, core_fingerprint_of


def save_trained(model, home: Path, training: Optional[dict] = None,
                 domain_metrics: Optional[dict] = None, domain_extra: Optional[dict] = None,
                 notes: Optional[list[str]] = None) -> str:
    """Write the core and one bundle per trained domain into ``home``; returns the core fingerprint.

    One snapshot switch: readers see the old core and bundles or the new ones, never a mix; other domains'
    bundles are kept. ``domain_extra`` maps a domain to extra fields of its ``domain.yaml`` (e.g. its
    training history).
    """
    with snapshots.transaction(Path(home), notes=notes) as txn:  # all of it becomes current at once, or nothing
        txn.remove(CORE_DIR)
        fingerprint = save_core(model, txn.root / CORE_DIR, training)
        for domain in model.domains:
            txn.remove(f"{DOMAINS_DIR}/{domain}")
            save_domain_bundle(model, domain, txn.root / DOMAINS_DIR / domain, fingerprint,
                               (domain_metrics or {}).get(domain), (domain_extra or {}).get(domain))
    model.core_fingerprint = fingerprint
    return fingerprint


def registry_lock(home: Path, timeout: Optional[float] = None):
    """Exclusive lock on the home's writes (see :func:`unictr_core.store.snapshots.lock`)."""
    return snapshots.lock(home, timeout)


def commit_bundle(home: Path, model, name: str, metrics: Optional[dict] = None, extra: Optional[dict] = None,
                  replace: bool = False, lock_timeout: Optional[float] = None,
                  notes: Optional[list[str]] = None) -> Path:
    """Write ``model``'s DSN for ``name`` into the home: one snapshot switch, under the lock.

    Refused (RegistryError, nothing written) unless the home's core is still the one ``model`` was loaded with
    (``model.core_fingerprint``). ``notes`` receives what the write had to clean up first (an interrupted write).
    """
    validate_domain_name(name, "domain name")
    home = Path(home)
    core_fingerprint = getattr(model, "core_fingerprint", None)
    if core_fingerprint is None:
        raise ValueError("the model has no core fingerprint: load its core from a home (load_core, load_model)")
    with _writing(home, lock_timeout, notes) as txn:
        current = core_fingerprint_of(txn.base)
        if current != core_fingerprint:
            raise RegistryError(f"the core in {home} changed while '{name}' was trained "
                                f"({core_fingerprint[:12]}… -> {str(current)[:12]}…); nothing was written")
        relative = f"{DOMAINS_DIR}/{name}"
        if (txn.root / relative).exists() or (txn.root / relative).is_symlink():
            if not replace:
                raise RegistryError(f"domain '{name}' already has a local bundle in {home / relative}; "
                                    "use --replace to overwrite it")
            txn.remove(relative)
        save_domain_bundle(model, name, txn.root / relative, core_fingerprint, metrics, extra)
    return home / DOMAINS_DIR / name


def delete_bundle(home: Path, name: str, lock_timeout: Optional[float] = None,
                  notes: Optional[list[str]] = None, registry: Optional[Registry] = None) -> DomainEntry:
    """Delete the local bundle of ``name``; refuses domains the home does not own (packages, definitions).

    A bundle that is a symbolic link is unregistered by deleting the link, never what it points to.
    ``registry``: the home's registry when the caller has one (default: one is opened).
    """
    home = Path(home)
    entry = removable_entry(Registry.open(home) if registry is None else registry.discover(), name)
    with _writing(home, lock_timeout, notes) as txn:
        relative = f"{DOMAINS_DIR}/{name}"
        if not ((txn.root / relative).is_dir() or (txn.root / relative).is_symlink()):
            raise RegistryError(f"domain '{name}' has no local bundle in {home / relative} (removed meanwhile?)")
        txn.remove(relative)
    return entry


@contextlib.contextmanager
def _writing(home: Path, lock_timeout: Optional[float],
             notes: Optional[list[str]]) -> Iterator[snapshots.Transaction]:
    try:
        with snapshots.transaction(home, lock_timeout, notes) as txn:
            yield txn
    except snapshots.HomeStoreError as exc:
        raise RegistryError(str(exc)) from None


def removable_entry(registry: Registry, name: str) -> DomainEntry:
    """The entry of ``name`` when the home owns a bundle of it; otherwise explains who provides it."""
    entry = registry.require(name)
    local_bundle = registry.domains_dir / name
    if entry.local or (local_bundle / "domain.yaml").exists():
        return entry
    if entry.distribution is not None:
        raise RegistryError(
            f"domain '{name}' is provided by the installed package '{entry.distribution}' (plugin "
            f"'{entry.plugin}'); UniCTR does not delete files it does not own. To disable it, uninstall the "
            f"package (pip uninstall {entry.distribution}) or leave its plugin out of UNICTR_LOAD_PLUGINS "
            f"(a comma-separated list of the external plugins to load)")
    if entry.source == "shipped definition":
        raise RegistryError(f"domain '{name}' is a shipped definition (template only, no trained DSN) from "
                            f"the unictr_domains package; there is no local bundle to remove")
    raise RegistryError(f"domain '{name}' is provided by plugin '{entry.plugin}', not by a local bundle in "
                        f"{registry.domains_dir}; disable that plugin instead")
