"""The domain registry: every domain any plugin provides, resolved against the current core.

Plugins register :class:`~unictr_core.plugins.DomainSpec` objects through the
``register_domains`` hook. The built-in plugin :mod:`unictr_plugins.local_domains`
serves the bundles in ``<home>/domains/`` and the shipped definitions; installed
packages add their own. One name may be registered several times (a local
bundle, a package bundle per core it was built for, a definition): the registry
picks, per name, the registration that serves best:

1. a bundle trained against the current core (compatible),
2. a bundle trained against another core (listed as incompatible; the domain is
   then predicted zero-shot with the bundle's template),
3. a definition only (template + description; predicted zero-shot).

Ties go to the local bundle, then to the first registered plugin (built-in first).

Reads resolve the home's current snapshot once (:mod:`unictr_core.home_store`);
writes (``train``, ``domain add`` / ``remove``) hold the home's lock and build a
new snapshot that becomes current in one atomic step, so an interrupted command
never leaves a half-registered domain and a reader never sees a mix.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from unictr_core import home_store, plugins
from unictr_core.artifact import (CORE_DIR, DOMAINS_DIR, MANIFEST, ArtifactError, load_core, load_domain_bundle,
                                  read_manifest, save_domain_bundle, verify_domain_bundle)
from unictr_core.data_io import validate_domain_name
from unictr_core.prompts import PromptTemplate, TemplateSet
from unictr_core.schema import DataError

LOCAL_PLUGIN = "unictr_plugins.local_domains"


class RegistryError(ArtifactError):
    """A registry operation that cannot be done (unknown domain, not ours to delete, locked, ...)."""


@dataclass
class DomainEntry:
    """One domain as the registry resolved it."""

    name: str
    source: str  # "local", "shipped definition", "package <distribution>" or "plugin <name>"
    plugin: str
    distribution: Optional[str] = None
    description: str = ""
    template: Optional[PromptTemplate] = None  # None: the core's default template
    bundle: Optional[Path] = None
    core_fingerprint: Optional[str] = None
    compatible: Optional[bool] = None  # None: no bundle, or no core to compare with
    local: bool = False  # the bundle lives in <home>/domains and `domain remove` may delete it
    size_bytes: int = 0
    metrics: dict = field(default_factory=dict)
    created: Optional[str] = None
    training: dict = field(default_factory=dict)  # how the DSN was trained, with its per-epoch history
    problem: Optional[str] = None
    others: list[str] = field(default_factory=list)  # other registrations of this name, not chosen

    @property
    def has_dsn(self) -> bool:
        return self.bundle is not None and self.problem is None

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "broken"
        if self.bundle is None:
            return "zero-shot"
        if self.compatible is None:
            return "no core"
        return "ready" if self.compatible else "incompatible"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "plugin": self.plugin, "distribution": self.distribution,
            "description": self.description, "status": self.status, "has_dsn": self.has_dsn,
            "compatible": self.compatible, "bundle": None if self.bundle is None else str(self.bundle),
            "core_fingerprint": self.core_fingerprint, "size_bytes": self.size_bytes, "metrics": self.metrics,
            "created": self.created, "training": self.training, "local": self.local, "problem": self.problem,
            "others": self.others,
            "template": None if self.template is None else self.template.to_dict(),
        }


def core_fingerprint_of(home: Path) -> Optional[str]:
    """The fingerprint of the core in ``home`` (a home or a snapshot folder), or ``None`` when it has none."""
    core = home_store.snapshot(Path(home)) / CORE_DIR
    if not (core / MANIFEST).exists():
        return None
    return str(read_manifest(core)["fingerprint"])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class Registry:
    """The resolved view over all plugins for one home (a snapshot; build a new one after changes)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = home_store.snapshot(self.home)  # resolved once: everything below reads this snapshot
        self.domains_dir = self.root / DOMAINS_DIR
        self.core_fingerprint = core_fingerprint_of(self.root)
        self.problems: list[str] = []
        candidates: dict[str, list[DomainEntry]] = {}
        for spec in plugins.domain_specs(self.root):
            try:
                validate_domain_name(spec.name, f"plugin '{spec.plugin}'")
            except DataError as exc:
                self.problems.append(f"ignored a domain registered by plugin '{spec.plugin}': {exc.reason}")
                continue
            candidates.setdefault(spec.name, []).append(self._entry(spec))
        self.entries: dict[str, DomainEntry] = {}
        for name in sorted(candidates):
            ranked = sorted(enumerate(candidates[name]), key=lambda pair: (self._rank(pair[1]), pair[0]))
            chosen = ranked[0][1]
            chosen.others = [f"{e.source} ({e.status})" for _, e in ranked[1:]]
            self.problems += [f"domain '{name}' ({e.source}, {e.bundle}) is unusable: {e.problem}"
                              for _, e in ranked[1:] if e.problem is not None]
            if chosen.template is None and (chosen.bundle is None or chosen.problem is not None):
                chosen.template = next((e.template for _, e in ranked if e.template is not None), None)
            if chosen.description == "":
                chosen.description = next((e.description for _, e in ranked if e.description), "")
            self.entries[name] = chosen

    @staticmethod
    def _rank(entry: DomainEntry) -> tuple[int, int]:
        # a broken bundle outranks a bare definition: `domain list` must show it broken, not hide it
        usefulness = {"ready": 0, "no core": 1, "incompatible": 1, "broken": 2, "zero-shot": 3}[entry.status]
        return usefulness, 0 if entry.local else 1

    def _entry(self, spec: plugins.DomainSpec) -> DomainEntry:
        entry = DomainEntry(name=spec.name, source="", plugin=spec.plugin, description=spec.description or "",
                            template=spec.template, core_fingerprint=spec.core_fingerprint)
        entry.distribution = plugins.distribution_of(spec.plugin)
        if spec.bundle is not None:
            entry.bundle = Path(spec.bundle)
            # a bundle is local when it is a folder of the home's domains/ itself: a symbolic link there is
            # refused (broken), never followed to files outside the home
            entry.local = entry.bundle.parent == self.domains_dir or (
                not entry.bundle.is_symlink() and _is_inside(entry.bundle, self.domains_dir))
            self._read_bundle(entry)
        if entry.local:
            entry.source = "local"
        elif entry.distribution is not None:
            entry.source = f"package {entry.distribution}"
        elif spec.plugin == LOCAL_PLUGIN:
            entry.source = "shipped definition"
        else:
            entry.source = f"plugin {spec.plugin}"
        return entry

    def _read_bundle(self, entry: DomainEntry) -> None:
        bundle = entry.bundle
        assert bundle is not None
        try:
            record = verify_domain_bundle(bundle)  # SHA-256 and header checked here, before any load
            if record.get("name") != entry.name or bundle.name != entry.name:
                raise ArtifactError(f"bundle {bundle} names domain '{record.get('name')}' in a folder named "
                                    f"'{bundle.name}', but was registered as '{entry.name}'")
            if entry.core_fingerprint is not None and entry.core_fingerprint != record.get("core_fingerprint"):
                raise ArtifactError(f"bundle {bundle} records core {str(record.get('core_fingerprint'))[:12]}…, "
                                    f"but its plugin registered it for core {entry.core_fingerprint[:12]}…")
            entry.core_fingerprint = record.get("core_fingerprint")
            entry.metrics = dict(record.get("metrics") or {})
            entry.created = record.get("created")
            entry.training = dict(record.get("training") or {}) if isinstance(record.get("training"), dict) else {}
            entry.description = entry.description or str(record.get("description") or "")
            entry.template = (PromptTemplate.from_dict(record["template"], source=str(bundle))
                              if record.get("template") else None)
            entry.size_bytes = _size(bundle)
            if self.core_fingerprint is not None:
                entry.compatible = entry.core_fingerprint == self.core_fingerprint
        except (ArtifactError, ValueError, OSError) as exc:
            entry.problem = str(exc)

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> Optional[DomainEntry]:
        return self.entries.get(name)

    def to_dict(self) -> dict[str, Any]:
        """What `unictr domain list --json` prints (and the server's ``GET /v1/domains``)."""
        return {"home": str(self.home), "core_fingerprint": self.core_fingerprint,
                "domains": [e.to_dict() for e in self.entries.values()], "problems": list(self.problems)}

    def require(self, name: str) -> DomainEntry:
        validate_domain_name(name, "domain name")
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(self.entries) or "none"
            raise RegistryError(f"unknown domain '{name}' (known: {known})")
        return entry


def state_token(home: Path) -> str:
    """Changes whenever train / domain add / replace / remove has committed; cheap (reads no weights).

    A server reloads its model when it changes (see :func:`unictr_core.home_store.state_token`).
    """
    return home_store.state_token(Path(home))


def templates_for(domains: Sequence[str], home: Optional[Path] = None,
                  default: Optional[PromptTemplate] = None) -> TemplateSet:
    """The template the domain registry knows for each of ``domains``; ``default`` for the others.

    The one source of templates: training uses it, and prediction reads the same
    entries (a bundle stores the template its DSN was trained with). Without a
    ``home``, only plugins' and shipped definitions' templates count. ``default``
    (a dataset's own template, see :func:`unictr_core.dataset.dataset_template`;
    else the built-in default) becomes the core's default template, which renders
    every domain without a template of its own, zero-shot ones included.
    """
    if home is None:
        import tempfile

        with tempfile.TemporaryDirectory() as empty:
            return templates_for(domains, Path(empty), default)
    registry = Registry(home)
    known = {name: entry.template for name, entry in registry.entries.items() if entry.template is not None}
    return TemplateSet({d: known[d] for d in domains if d in known}, default=default)


# --------------------------------------------------------------------------- loading a model
def load_model(home: Path, domains: Optional[list[str]] = None, core=None, registry: Optional[Registry] = None):
    """The home's core with every compatible DSN the registry serves; returns (model, notes).

    Domains without a usable DSN keep the template the registry knows for them
    (shipped definition or package), and the general network predicts them
    (zero-shot). ``domains`` limits which domains are attached. ``core``: an
    already loaded core without DSNs to attach them to (default: load it);
    ``registry``: the snapshot to resolve domains with (default: a new one).
    """
    home = Path(home)
    registry = Registry(home) if registry is None else registry
    if not (registry.root / CORE_DIR / MANIFEST).exists():
        raise ArtifactError(f"no trained core in {home} (expected {home / CORE_DIR / MANIFEST}); run `unictr train`")
    model = load_core(registry.root / CORE_DIR) if core is None else core
    notes = list(registry.problems)
    for name, entry in registry.entries.items():
        if domains is not None and name not in domains:
            continue
        if entry.has_dsn and entry.compatible:
            try:
                load_domain_bundle(model, entry.bundle)  # verifies fingerprint and weights again
                continue
            except (ArtifactError, ValueError, RuntimeError) as exc:
                notes.append(f"domain '{name}' ({entry.source}) is broken and predicted zero-shot: {exc}")
        elif entry.problem is not None:
            notes.append(f"domain '{name}' ({entry.source}) is broken and predicted zero-shot: {entry.problem}")
        elif entry.bundle is not None:
            notes.append(
                f"domain bundle '{name}' ({entry.source}, {entry.bundle}) was trained against core "
                f"{str(entry.core_fingerprint)[:12]}…, but the loaded core is {str(registry.core_fingerprint)[:12]}…; "
                f"'{name}' is predicted zero-shot; retrain it with `unictr domain add {name}`")
        if entry.template is not None:
            model.templates.templates[name] = entry.template
    return model, notes


# --------------------------------------------------------------------------- writing
def registry_lock(home: Path, timeout: Optional[float] = None):
    """Exclusive lock on the home's writes (see :func:`unictr_core.home_store.lock`)."""
    return home_store.lock(home, timeout)


def commit_bundle(home: Path, model, name: str, core_fingerprint: str, metrics: Optional[dict] = None,
                  extra: Optional[dict] = None, replace: bool = False, lock_timeout: Optional[float] = None,
                  notes: Optional[list[str]] = None) -> Path:
    """Write ``model``'s DSN for ``name`` into the home: one snapshot switch, under the lock.

    ``notes`` receives what the write had to clean up first (an interrupted write, a migration).
    """
    validate_domain_name(name, "domain name")
    home = Path(home)
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


def remove_domain(home: Path, name: str, lock_timeout: Optional[float] = None,
                  notes: Optional[list[str]] = None) -> DomainEntry:
    """Delete the local bundle of ``name``; refuses domains the home does not own (packages, definitions).

    A bundle that is a symbolic link is unregistered by deleting the link, never what it points to.
    """
    home = Path(home)
    entry = removable_entry(Registry(home), name)
    with _writing(home, lock_timeout, notes) as txn:
        relative = f"{DOMAINS_DIR}/{name}"
        if not ((txn.root / relative).is_dir() or (txn.root / relative).is_symlink()):
            raise RegistryError(f"domain '{name}' has no local bundle in {home / relative} (removed meanwhile?)")
        txn.remove(relative)
    return entry


@contextlib.contextmanager
def _writing(home: Path, lock_timeout: Optional[float],
             notes: Optional[list[str]]) -> Iterator[home_store.Transaction]:
    try:
        with home_store.transaction(home, lock_timeout, notes) as txn:
            yield txn
    except home_store.HomeStoreError as exc:
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
