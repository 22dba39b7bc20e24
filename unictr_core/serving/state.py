"""The live registry of a server: the model it serves now, and how a commit on disk replaces it.

A :class:`ServingState` is immutable once built: the registry snapshot, the model
(core + the DSNs that loaded), the core fingerprint and the state token it was
built from. :class:`LiveRegistry` holds the current one behind a single
reference; a request takes that reference once and finishes on that state even
if a reload swaps in a new one meanwhile.

A watcher thread polls :func:`unictr_core.store.registry.state_token` (a few ``stat``
calls). When it changes, the new state is built under the registry lock, so no
writer is half-way through a commit while it is read (and writers only ever
rename finished folders into place). A domain add/remove reuses the loaded core
(backbone, LoRA, general network) and only loads DSN bundles; a re-train loads
the new core. If the new state cannot be built (broken core, unreadable home)
the old one keeps serving and the error is reported; if one domain's new bundle
is broken while the core is unchanged, that domain keeps its previous DSN.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from unictr_core.config import DEFAULT_PRECISION
from unictr_core.data.prompts import TemplateSet
from unictr_core.modeling.fast_path import describe, match_serving_dtype, prepare_for_prediction
from unictr_core.modeling.model import UniCTRModel
from unictr_core.store.artifact import load_core
from unictr_core.store.layout import CORE_DIR, MANIFEST, ArtifactError
from unictr_core.store.loading import load_model
from unictr_core.store.records import verify_core_files
from unictr_core.store.registry import Registry, RegistryError, state_token
from unictr_core.store.snapshots import generation_number
from unictr_core.store.writes import registry_lock

log = logging.getLogger("unictr.serve")


@dataclass(frozen=True)
class ServingState:
    generation: int  # the home's generation on disk (generations/g000002: 2); 0 for a home without generations
    token: str
    registry: Registry
    model: UniCTRModel
    notes: tuple[str, ...]
    loaded_at: float = field(default_factory=time.time)

    @property
    def core_fingerprint(self) -> str:
        return str(self.model.core_fingerprint)

    def to_dict(self) -> dict:
        return {"generation": self.generation, "state_token": self.token, "core_fingerprint": self.core_fingerprint,
                "loaded_at": self.loaded_at, "dsns": sorted(self.model.dsns), "notes": list(self.notes),
                "model": describe(self.model)}


def model_view(core: UniCTRModel) -> UniCTRModel:
    """A model sharing ``core``'s backbone, LoRA and general network, with its own (empty) DSNs and templates."""
    view = copy.copy(core)
    view._modules = dict(core._modules)  # shared submodules; a new dict, so new DSNs do not reach ``core``
    view.dsns = nn.ModuleDict()
    view.templates = TemplateSet({}, core.templates.default)  # load_model adds the registry's templates
    return view


def _bundle_broken(registry: Registry, name: str, model: UniCTRModel) -> bool:
    """True when ``name`` has a bundle that should have given it a DSN but did not load."""
    entry = registry.get(name)
    if entry is None:
        return False
    if entry.status == "broken" or any(other.endswith("(broken)") for other in entry.others):
        return True
    return entry.has_dsn and bool(entry.compatible) and name not in model.dsns


def build_state(home: Path, generation: int, token: str, previous: Optional[ServingState] = None,
                precision: str = DEFAULT_PRECISION, quantize: str = "none") -> ServingState:
    """A new state for ``home`` at ``token``; the caller holds the registry lock. Reuses ``previous``'s core
    when it is unchanged; a newly loaded core is prepared for prediction once (LoRA merged, weights in
    ``precision``, int8 with ``quantize``: :mod:`unictr_core.modeling.fast_path`)."""
    registry = Registry.open(home)
    if registry.core_problem is not None:
        raise ArtifactError(registry.core_problem)
    if registry.core_fingerprint is None:
        raise ArtifactError(f"no trained core in {home}; run `unictr train`")  # removed after the check above
    same_core = previous is not None and previous.core_fingerprint == registry.core_fingerprint
    if same_core:
        verify_core_files(registry.root / CORE_DIR)  # same manifest; its files are checked again all the same
    core = previous.model if same_core else prepare_for_prediction(load_core(registry.root / CORE_DIR), precision,
                                                                    quantize)
    model, notes = load_model(home, core=model_view(core), registry=registry)
    if same_core:
        for name, dsn in previous.model.dsns.items():
            if name not in model.dsns and _bundle_broken(registry, name, model):
                model.dsns[name] = dsn
                template = previous.model.templates.templates.get(name)
                if template is not None:
                    model.templates.templates[name] = template
                notes.append(f"domain '{name}': its new bundle is broken; still serving its previous DSN "
                             f"(generation {previous.generation})")
    match_serving_dtype(model)  # the DSNs just loaded, in the core's precision
    return ServingState(generation=generation, token=token, registry=registry, model=model, notes=tuple(notes))


class LiveRegistry:
    """The current :class:`ServingState` of a home, reloaded when a commit changes the home."""

    def __init__(self, home: Path, poll_interval_s: float = 0.5, lock_timeout_s: float = 60.0,
                 on_change: Optional[Callable[[ServingState], None]] = None, precision: str = DEFAULT_PRECISION,
                 quantize: str = "none"):
        self.home = Path(home)
        self.precision = precision
        self.quantize = quantize
        self.poll_interval_s = poll_interval_s
        self.lock_timeout_s = lock_timeout_s
        self.on_change = on_change
        self.state: Optional[ServingState] = None  # swapped in one assignment; readers take it once
        self.last_error: Optional[str] = None
        self.reload_failures = 0
        self._failed_token: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ reloading
    def reload(self) -> bool:
        """Build a new state under the registry lock and swap it in; False (old state kept) on failure."""
        previous = self.state
        if not (self.home / CORE_DIR / MANIFEST).exists():  # nothing to load; taking the lock would create folders
            self._fail(f"no trained core in {self.home}; run `unictr train`", token=state_token(self.home))
            return False
        token = None
        try:
            with registry_lock(self.home, self.lock_timeout_s):
                token = state_token(self.home)
                state = build_state(self.home, generation_number(token), token, previous, self.precision,
                                    self.quantize)
        except RegistryError as exc:  # locked for longer than the timeout (token None): try again at the next poll
            self._fail(str(exc), token=token)
            return False
        except Exception as exc:  # noqa: BLE001 - whatever breaks, the old state keeps serving
            self._fail(f"{type(exc).__name__}: {exc}", token=token)
            return False
        self.state = state
        self.last_error = None
        self._failed_token = None
        log.info("serving generation %d: core %s, DSNs: %s", state.generation, state.core_fingerprint[:12],
                 ", ".join(sorted(state.model.dsns)) or "none")
        for note in state.notes:
            log.warning("%s", note)
        if self.on_change is not None:
            self.on_change(state)
        return True

    def _fail(self, message: str, token: Optional[str]) -> None:
        self.reload_failures += 1
        self.last_error = message
        self._failed_token = token
        kept = "no state loaded yet" if self.state is None else f"still serving generation {self.state.generation}"
        log.error("reload of %s failed (%s): %s", self.home, kept, message)

    def changed(self) -> bool:
        """Whether the home has a commit the current state does not show (and that has not already failed)."""
        token = state_token(self.home)
        current = None if self.state is None else self.state.token
        return token != current and token != self._failed_token

    # ------------------------------------------------------------------ watching
    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="unictr-registry-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self.changed():
                    self.reload()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one failure
                self._fail(f"{type(exc).__name__}: {exc}", token=None)
            self._stop.wait(self.poll_interval_s)

    def to_dict(self) -> dict:
        return {"state": None if self.state is None else self.state.to_dict(), "precision": self.precision,
                "quantize": self.quantize, "last_reload_error": self.last_error,
                "reload_failures": self.reload_failures, "poll_interval_s": self.poll_interval_s}
