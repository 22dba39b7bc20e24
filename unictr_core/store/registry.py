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

The registry resolves the home's current snapshot once
(:mod:`unictr_core.store.snapshots`) and reads only records (no torch, no
weights); :mod:`unictr_core.store.loading` builds a model from it and
:mod:`unictr_core.store.writes` commits and removes bundles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from unictr_core import plugins
from unictr_core.data.data_io import validate_domain_name
from unictr_core.data.prompts import PromptTemplate, TemplateSet
from unictr_core.data.schema import DataError
from unictr_core.store import snapshots
from unictr_core.store.layout import CORE_DIR, DOMAINS_DIR, MANIFEST, ArtifactError
from unictr_core.store.records import check_dsn_layout, read_manifest, verify_domain_bundle


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
    # the bundle's domain.yaml as discovery checked it (weights' SHA-256, header, layout); loading passes it on
    record: Optional[dict] = field(default=None, repr=False)

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


def core_manifest_of(home: Path) -> Optional[dict]:
    """The checked manifest of the core in ``home`` (a home or a snapshot folder), or ``None`` when it has none;
    ArtifactError when it is broken."""
    core = snapshots.snapshot(Path(home)) / CORE_DIR
    if not (core / MANIFEST).exists():
        return None
    return read_manifest(core)


def core_fingerprint_of(home: Path) -> Optional[str]:
    """The fingerprint of the core in ``home`` (a home or a snapshot folder), or ``None`` when it has none."""
    manifest = core_manifest_of(home)
    return None if manifest is None else str(manifest["fingerprint"])


def _one_line(text: str) -> str:
    """``text`` with its line breaks (and other control characters) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _spec_problem(spec: plugins.DomainSpec) -> Optional[str]:
    """Why a plugin's DomainSpec cannot be used (a field of the wrong type), or None."""
    from os import PathLike

    checks = [("bundle", spec.bundle, (str, PathLike), "a folder path"),
              ("template", spec.template, (PromptTemplate,), "a PromptTemplate"),
              ("description", spec.description, (str,), "text"),
              ("core_fingerprint", spec.core_fingerprint, (str,), "text")]
    for field_name, value, types, expected in checks:
        if value is not None and not isinstance(value, types):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return (f"plugin '{spec.plugin}' registered '{spec.name}' with {field_name}={shown} "
                    f"({type(value).__name__}), expected {expected}")
    return None


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class Registry:
    """The resolved view over all plugins for one home (a snapshot; build a new one after changes).

    Building one is cheap: it resolves the home's current snapshot and reads the core's manifest (no weights),
    so ``core_fingerprint`` is known. :meth:`discover` is the expensive step, done once per command: it runs
    every plugin's ``register_domains`` hook once and checks every registered bundle once (SHA-256, header, the
    core's DSN layout); each entry keeps the checked record (:attr:`DomainEntry.record`), which
    :func:`unictr_core.store.loading.load_model` passes on instead of checking the bundle again.
    :meth:`open` does both; a command opens one registry and hands it to whatever else needs it.
    """

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = snapshots.snapshot(self.home)  # resolved once: everything below reads this snapshot
        self.domains_dir = self.root / DOMAINS_DIR
        self.problems: list[str] = []
        self.core_problem: Optional[str] = None
        try:
            manifest = core_manifest_of(self.root)  # one small YAML file: no weights are read
        except ArtifactError as exc:  # listed, so that the domains still show; loading the core fails with it
            manifest, self.core_problem = None, str(exc)
            self.problems.append(_one_line(f"the core is broken: {exc}"))
        self.core_fingerprint = None if manifest is None else str(manifest["fingerprint"])
        self.dsn_layout = None if manifest is None else manifest["dsn_layout"]  # None: no readable core
        self._registrations: Optional[dict[str, list[DomainEntry]]] = None  # every registration, by name
        self._entries: Optional[dict[str, DomainEntry]] = None

    @classmethod
    def open(cls, home: Path) -> "Registry":
        """The registry of ``home``, discovered (see :meth:`discover`): what a command builds, once."""
        return cls(home).discover()

    @property
    def entries(self) -> dict[str, DomainEntry]:
        """The chosen entry of every known domain, by name (sorted); only after :meth:`discover`."""
        if self._entries is None:
            raise RegistryError(f"the registry of {self.home} has not discovered its domains yet: "
                                "use Registry.open(home), or call .discover() first")
        return self._entries

    def discover(self) -> "Registry":
        """Run the plugins' ``register_domains`` hooks, check every bundle and choose an entry per name; returns
        the registry. Done once: a second call changes nothing."""
        if self._entries is not None:
            return self
        specs = plugins.domain_specs(self.root)
        self.problems += plugins.domain_plugin_problems()
        self._registrations = self._candidates(specs)
        entries = {}
        for name in sorted(self._registrations):
            ranked = self._ranked(self._registrations[name])
            entries[name] = self._choose(ranked)
            self.problems += [f"domain '{name}' ({e.source}, {e.bundle}) is unusable: {e.problem}"
                              for e in ranked[1:] if e.problem is not None]
        snapshots.ensure_alive(self.root)  # deleted while it was read: its entries describe nothing, retry
        self.problems = [_one_line(problem) for problem in self.problems]  # reasons quote what files hold
        self._entries = entries
        return self

    def without_local(self, name: str) -> Optional[DomainEntry]:
        """The entry that serves ``name`` once its local bundle is gone (a package's bundle, a definition), or
        None: what ``domain remove`` reports, chosen from the registrations discovery found (no second run)."""
        self.entries  # noqa: B018 - discovered, or RegistryError
        rest = [e for e in (self._registrations or {}).get(name, []) if not e.local]
        return self._choose(self._ranked(rest)) if rest else None

    def _candidates(self, specs: Sequence[plugins.DomainSpec]) -> dict[str, list[DomainEntry]]:
        """Every valid registration as an entry (its bundle checked), by name, in registration order."""
        candidates: dict[str, list[DomainEntry]] = {}
        for spec in specs:
            try:
                validate_domain_name(spec.name, f"plugin '{spec.plugin}'")
            except DataError as exc:
                self.problems.append(f"ignored a domain registered by plugin '{spec.plugin}': {exc.reason}")
                continue
            try:
                entry = self._entry(spec)
            except Exception as exc:  # noqa: BLE001 - one plugin's garbage never hides the other domains
                entry = DomainEntry(name=spec.name, source=f"plugin {spec.plugin}", plugin=spec.plugin,
                                    problem=f"{type(exc).__name__}: {exc}")
            if entry.problem is not None:  # reasons quote what files hold: one line each, whatever they hold
                entry.problem = _one_line(entry.problem)
            candidates.setdefault(spec.name, []).append(entry)
        return candidates

    def _ranked(self, registrations: list[DomainEntry]) -> list[DomainEntry]:
        """``registrations`` best first (see the module's docstring); ties in registration order."""
        return [e for _, e in sorted(enumerate(registrations), key=lambda pair: (self._rank(pair[1]), pair[0]))]

    @staticmethod
    def _choose(ranked: list[DomainEntry]) -> DomainEntry:
        """A copy of the first of ``ranked``, completed from the others (the registrations stay as registered)."""
        chosen = dataclasses.replace(ranked[0])
        chosen.others = [f"{e.source} ({e.status})" for e in ranked[1:]]
        if chosen.template is None and (chosen.bundle is None or chosen.problem is not None):
            chosen.template = next((e.template for e in ranked if e.template is not None), None)
        if chosen.description == "":
            chosen.description = next((e.description for e in ranked if e.description), "")
        return chosen

    @staticmethod
    def _rank(entry: DomainEntry) -> tuple[int, int]:
        # a broken bundle outranks a bare definition: `domain list` must show it broken, not hide it
        usefulness = {"ready": 0, "no core": 1, "incompatible": 1, "broken": 2, "zero-shot": 3}[entry.status]
        return usefulness, 0 if entry.local else 1

    def _entry(self, spec: plugins.DomainSpec) -> DomainEntry:
        wrong = _spec_problem(spec)
        entry = DomainEntry(name=spec.name, source="", plugin=spec.plugin, problem=wrong)
        entry.distribution = plugins.distribution_of(spec.plugin)
        if wrong is not None:
            entry.source = (f"package {entry.distribution}" if entry.distribution is not None
                            else f"plugin {spec.plugin}")
            return entry
        entry.description, entry.template = spec.description or "", spec.template
        entry.core_fingerprint = spec.core_fingerprint
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
        elif spec.source:
            entry.source = spec.source  # e.g. "shipped definition"
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
            if self.dsn_layout is not None and entry.core_fingerprint == self.core_fingerprint:
                check_dsn_layout(bundle, self.dsn_layout, record["dsn"])  # names and shapes: the core's DSN
            entry.record = record
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
        except Exception as exc:  # noqa: BLE001 - whatever one bundle holds, the others are still listed
            entry.problem = f"{bundle}: {type(exc).__name__}: {exc}"

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
            broken = "".join(f"; {problem}" for problem in self.problems if problem.startswith("plugin "))
            raise RegistryError(f"unknown domain '{name}' (known: {known}){broken}")
        return entry


def state_token(home: Path) -> str:
    """Changes whenever train / domain add / replace / remove has committed; cheap (reads no weights).

    A server reloads its model when it changes (see :func:`unictr_core.store.snapshots.state_token`).
    """
    return snapshots.state_token(Path(home))


def templates_for(domains: Sequence[str], home: Optional[Path] = None,
                  default: Optional[PromptTemplate] = None, registry: Optional[Registry] = None) -> TemplateSet:
    """The template the domain registry knows for each of ``domains``; ``default`` for the others.

    The one source of templates: training uses it, and prediction reads the same
    entries (a bundle stores the template its DSN was trained with). Without a
    ``home``, only plugins' and shipped definitions' templates count. ``default``
    (a dataset's own template, see :func:`unictr_core.data.dataset.dataset_template`;
    else the built-in default) becomes the core's default template, which renders
    every domain without a template of its own, zero-shot ones included.
    ``registry``: the home's registry when the caller has one (default: one is opened).
    """
    if registry is None and home is None:
        import tempfile

        with tempfile.TemporaryDirectory() as empty:
            return templates_for(domains, Path(empty), default)
    registry = Registry.open(home) if registry is None else registry.discover()
    known = {name: entry.template for name, entry in registry.entries.items() if entry.template is not None}
    return TemplateSet({d: known[d] for d in domains if d in known}, default=default)
