"""The use cases, one function per verb: train a home, add / remove a domain, evaluate, predict; they print nothing.

The ``unictr`` CLI parses its options, calls these and prints what they return; scripts (the third-party
example, the benchmarks) call them too instead of repeating the steps. Verbs that train come in two steps:
``plan_*`` reads and checks everything (data, registry, core) and returns a plan a caller can show before
the long part; the verb itself trains, writes the home, and returns its result. In a distributed run
(``group``, see :mod:`unictr_core.fit.distributed`) every rank calls both; only rank 0 writes, the others
get ``None``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from unictr_core.baselines import compare as comparing
from unictr_core.baselines.floors import floor_scores
from unictr_core.config import (DEFAULT_PRECISION, DOMAIN_ADD_COMPARE, DOMAIN_ADD_DEFAULTS, TrainConfig,
                                check_id_lr_scale)
from unictr_core.data.data_io import validate_domain_name
from unictr_core.data.dataset import dataset_template, load_dataset, subsample_per_domain
from unictr_core.data.prompts import PromptTemplate, TemplateSet, field_usage, read_template_file
from unictr_core.data.schema import Sample
from unictr_core.fit import distributed
from unictr_core.fit.distributed import DistContext
from unictr_core.fit.domain_training import DomainAddOptions, domain_splits, train_domain
from unictr_core.fit.report import evaluation_report
from unictr_core.fit.training import train_unictr
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.fast_path import describe, prepare_for_prediction
from unictr_core.modeling.predict import prediction_records, predict_samples
from unictr_core.modeling.rank import candidate_samples, rank_samples
from unictr_core.store.artifact import load_core
from unictr_core.store.layout import CORE_DIR, DOMAINS_DIR, MANIFEST
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry, RegistryError, templates_for
from unictr_core.store.writes import commit_bundle, delete_bundle, removable_entry, save_trained

EpochCallback = Optional[Callable[[dict], None]]


# --------------------------------------------------------------------------- train a home
@dataclass
class TrainPlan:
    """What ``unictr train`` will do: the dataset, the chosen domains, their rows, templates and settings."""

    data: Path
    home: Path
    dataset: Any  # unictr_core.data.dataset.Dataset
    domains: list[str]
    train_rows: list[Sample]
    model_config: Any  # ModelConfig
    train_config: Any  # TrainConfig
    templates: Any  # TemplateSet
    replacing: Optional["CoreReplacement"] = None  # the home's current core, which this training replaces

    @property
    def training_rows(self) -> int:
        return sum(s.domain in self.domains for s in self.train_rows)

    def field_usage(self):
        """Which sample fields the templates render and ignore (see :func:`unictr_core.data.prompts.field_usage`)."""
        return field_usage(self.templates, [s for s in self.train_rows if s.domain in self.domains])


@dataclass
class TrainHomeResult:
    fingerprint: str
    training: Any  # unictr_core.fit.training.TrainResult
    notes: list[str] = field(default_factory=list)  # what the write cleaned up first


@dataclass
class CoreReplacement:
    """What training into a home that already has a core replaces, and which domains it leaves without a DSN."""

    core_fingerprint: str  # the home's current core
    retrained: list[str]  # domains with a DSN for that core that the training trains again
    orphaned: list[str]  # domains with a DSN for that core that it does not train: they become incompatible

    def message(self, home: Path, replacing: bool = False) -> str:
        """Why the home is refused; with ``replacing``, what training it anyway does."""
        fate = "are orphaned" if replacing else "would be orphaned"
        orphans = (f"; the DSNs of {', '.join(self.orphaned)} were trained for that core and {fate} "
                   f"(incompatible, answered zero-shot until `unictr domain add` trains them again)"
                   if self.orphaned else "; no other domain has a DSN for that core")
        retrained = f" and its DSNs of {', '.join(self.retrained)}" if self.retrained else ""
        return (f"{home} already has a trained core {self.core_fingerprint[:12]}: training replaces it{retrained}"
                f"{orphans}")


def core_replacement(home: Path, domains: Sequence[str],
                     registry: Optional[Registry] = None) -> Optional[CoreReplacement]:
    """What training ``domains`` into ``home`` would replace; None when the home has no trained core.

    ``registry``: the home's registry when the caller has one (default: one is opened)."""
    home = Path(home)
    if not (home / CORE_DIR / MANIFEST).exists():
        return None
    registry = Registry.open(home) if registry is None else registry.discover()
    if registry.core_fingerprint is None:
        return None
    ready = sorted(name for name, entry in registry.entries.items() if entry.has_dsn and entry.compatible)
    return CoreReplacement(registry.core_fingerprint, [d for d in ready if d in domains],
                           [d for d in ready if d not in domains])


def plan_training(data: Path, home: Path, model_config, train_config, domains: Optional[list[str]] = None,
                  max_rows: Optional[int] = None, group=None, replace: bool = False) -> TrainPlan:
    """Read ``data`` and check the settings; ``domains`` default: every domain but the dataset's holdout ones.

    ``train_config.domains`` is set to the chosen domains and ``train_config.cache_dir``, when None, to the home.
    A home that already has a trained core is refused (ValueError naming the domains whose DSNs the new core
    would orphan) unless ``replace``; the plan's ``replacing`` then says what is replaced.
    """
    group = group or DistContext()
    data, home = Path(data), Path(home)
    with distributed.agreement(group, "reading the dataset"):
        dataset = load_dataset(data)
        chosen = domains
        if chosen is None:
            holdout = set(dataset.meta.get("holdout_domains") or [])
            chosen = sorted({s.domain for s in dataset.train} - holdout)
        missing = sorted(set(chosen) - {s.domain for s in dataset.train})
        if missing:
            raise ValueError(f"--domains: no training rows for {', '.join(missing)} in {data / 'train.jsonl'}")
        model_config.validate()
        train_config.domains = chosen
        if train_config.cache_dir is None:  # a memory-mapped hidden-state cache goes into the home
            train_config.cache_dir = str(home)
        train_config.validate()
        check_id_lr_scale(model_config, train_config)
        registry = Registry.open(home)  # one discovery: what training replaces, and the templates
        replacing = core_replacement(home, chosen, registry)
        if replacing is not None and not replace:
            raise ValueError(f"{replacing.message(home)}. Pass --replace to train anyway, or choose another --home.")
    train_rows = subsample_per_domain(dataset.train, max_rows, train_config.seed)
    templates = templates_for(chosen, home, dataset.template, registry)
    return TrainPlan(data, home, dataset, chosen, train_rows, model_config, train_config, templates, replacing)


def train_home(plan: TrainPlan, group=None, on_epoch: EpochCallback = None,
               progress: bool = True) -> Optional[TrainHomeResult]:
    """Train the core and one DSN per domain jointly, then write them to the home in one snapshot switch.

    ``progress``: tqdm bars (on stderr) while it trains; ``on_epoch(record)`` after every epoch.
    """
    group = group or DistContext()
    result = train_unictr(plan.train_rows, plan.dataset.valid, plan.model_config, plan.train_config,
                          templates=plan.templates, progress=progress, dist_ctx=group, on_epoch=on_epoch)
    if not group.is_main:
        return None
    history = [{k: v for k, v in r.items() if k != "valid"} for r in result.history]
    training = {"dataset": str(plan.data), "domains": plan.domains, "best_epoch": result.best_epoch,
                "valid_auc": result.best_valid_auc, "seconds": round(result.seconds, 1),
                "config": plan.train_config.to_dict(), "distributed": result.distributed, "history": history,
                "precision": result.precision, "hidden_state_cache": result.cache}
    per_domain_history = {d: {"training": {"best_epoch": result.best_epoch, "history": [
        {"epoch": r["epoch"], "train_loss": r["train_loss"], "valid_auc": r["valid"].get(d, {}).get("auc"),
         "valid_logloss": r["valid"].get(d, {}).get("logloss"), "seconds": r["seconds"]}
        for r in result.history]}} for d in plan.domains}
    notes: list[str] = []  # one snapshot switch under the home's lock: readers see the old home or the new
    fingerprint = save_trained(result.model, plan.home, training, result.valid_metrics, per_domain_history, notes)
    return TrainHomeResult(fingerprint, result, notes)


# --------------------------------------------------------------------------- add a domain
@dataclass
class DomainAddPlan:
    """What ``unictr domain add`` will train: the core, the domain's template, its splits."""

    name: str
    home: Path
    data: Path
    core_fingerprint: str
    entry: Any  # the registry's DomainEntry for the name, or None
    template: Any  # PromptTemplate or None (the core's default)
    description: str
    train_rows: list[Sample]
    valid_rows: list[Sample]
    test_rows: list[Sample]
    notes: list[str]  # about the split of the data
    model: Any  # the loaded core (UniCTRModel, no DSN for ``name`` yet)
    precision: str
    replace: bool = False  # an existing local bundle of ``name`` may be replaced
    compare: list[str] = field(default_factory=list)  # baselines trained on the same rows after the DSN (checked)

    @property
    def shadowed_source(self) -> Optional[str]:
        """The package or plugin that also serves a ready DSN for the name (the local bundle will win)."""
        entry = self.entry
        if entry is not None and entry.has_dsn and entry.compatible and not entry.local:
            return entry.source
        return None

    def field_usage(self):
        return field_usage(TemplateSet({self.name: self.template} if self.template else {},
                                       default=self.model.templates.default), self.train_rows)


@dataclass
class DomainAddResult:
    target: Path  # the bundle folder in the home
    training: Any  # unictr_core.fit.domain_training.DomainTrainResult
    floors: dict  # count rules scored on the held-out part: {name: {"auc", "logloss"}}
    notes: list[str] = field(default_factory=list)  # what the write cleaned up first
    # ``--compare``: the baselines trained on the same rows (see unictr_core.baselines.compare.compare_baselines), as
    # stored in the bundle's metrics; None when none was asked for
    comparison: Optional[dict] = None


@dataclass(frozen=True)
class DomainData:
    """A new domain's labelled rows and which of them train.

    ``path``: a .jsonl/.csv file or a dataset folder (see :func:`unictr_core.fit.domain_training.domain_splits`);
    ``all_rows``: every row of it counts as the domain; ``max_rows``: at most N training rows (a seeded
    subsample, the plan's ``config.seed``).
    """

    path: Path
    all_rows: bool = False
    max_rows: Optional[int] = None


def plan_domain_add(home: Path, name: str, data: Path | DomainData, config: TrainConfig = DOMAIN_ADD_DEFAULTS,
                    template=None, replace: bool = False, compare: Optional[Sequence[str]] = DOMAIN_ADD_COMPARE,
                    group=None) -> DomainAddPlan:
    """Check the name against the registry, choose the template, split ``data``, load the core.

    ``data``: the path of the domain's rows, or a :class:`DomainData` (to take every row as ``name`` or to
    subsample). ``config``: its ``seed`` (split and subsample) and ``precision`` (resolved into the plan's);
    :func:`train_dsn` / :func:`add_domain` take the training settings. ``template``: a PromptTemplate, or the
    path of a template YAML file (or of a domain definition with ``template:``); default: the template the
    registry knows for ``name``, else the one in ``data``'s dataset.yaml, else the core's default.
    ``replace``: an existing local bundle of ``name`` may be replaced. ``compare``: names of registered baselines
    (``dcn``, ``deepfm``, ``item_rate``, ...) that :func:`add_domain` trains on the same train / valid / test rows
    after the DSN and reports next to it (:mod:`unictr_core.baselines.compare`); an unknown name is a ValueError here,
    before anything is loaded or trained.
    """
    group = group or DistContext()
    home = Path(home)
    source = data if isinstance(data, DomainData) else DomainData(Path(data))
    with distributed.agreement(group, f"reading the core and the data of '{name}'"):
        validate_domain_name(name, "domain name")
        compared = comparing.check_models(compare)
        registry = Registry.open(home)
        if registry.core_fingerprint is None:
            raise RegistryError(f"no trained core in {home}; run `unictr train` first")
        entry = registry.get(name)
        if entry is not None and entry.local and not replace:
            raise RegistryError(f"domain '{name}' already has a local bundle ({entry.bundle}); use --replace")
        if isinstance(template, PromptTemplate):
            chosen_template, description = template, ""
        elif template is not None:
            chosen_template, description = read_template_file(template, name, what="--template")
        else:
            chosen_template = entry.template if entry is not None else dataset_template(source.path)
            description = entry.description if entry is not None else ""
        train_rows, valid_rows, test_rows, notes = domain_splits(source.path, name, config.seed,
                                                                 all_rows=source.all_rows)
        model = load_core(registry.root / CORE_DIR).to(group.device)
        precision = precisions.resolve(config.precision, group.device, training=True)
    train_rows = subsample_per_domain(train_rows, source.max_rows, config.seed)
    return DomainAddPlan(name, home, Path(source.path), registry.core_fingerprint, entry, chosen_template, description,
                         train_rows, valid_rows, test_rows, notes, model, precision, replace, compared)


def train_dsn(plan: DomainAddPlan, config: TrainConfig = DOMAIN_ADD_DEFAULTS,
              options: Optional[DomainAddOptions] = None):
    """Train the DSN of ``plan.name`` against the frozen core; writes nothing.

    ``config``: the training settings, the kind of DSN (``dsn``: residual or standalone) and the hidden-state
    cache's ``max_cache_gb``, ``cache_dir`` (None: the home) and ``cache_dtype``; it trains in ``plan.precision``.
    ``options``: whether the DSN reads the domain's causal count statistics (``stats``,
    :mod:`unictr_core.modeling.stats`), the cache, progress bars, the process group and the epoch callback (see
    :class:`~unictr_core.fit.domain_training.DomainAddOptions`).

    Returns :class:`unictr_core.fit.domain_training.DomainTrainResult`; the DSN is ``plan.model.dsns[plan.name]``.
    """
    settings = dataclasses.replace(config, precision=plan.precision, cache_dir=str(config.cache_dir or plan.home))
    return train_domain(plan.model, plan.name, plan.train_rows, plan.valid_rows, plan.test_rows, plan.template,
                        settings, options or DomainAddOptions())


def add_domain(plan: DomainAddPlan, config: TrainConfig = DOMAIN_ADD_DEFAULTS,
               options: Optional[DomainAddOptions] = None,
               description: Optional[str] = None) -> Optional[DomainAddResult]:
    """:func:`train_dsn`, then score the count-rule floors (and the ``plan.compare`` baselines, trained on the
    same rows) and commit the bundle into the home (rank 0 of ``options.dist_ctx``).

    ``description``: stored in the bundle (default: the plan's). Raises ValueError (nothing registered) for a
    standalone DSN that never beat its random start. The comparison is stored in the bundle's metrics
    (``compare``) and never changes the DSN that is registered.
    """
    options = options or DomainAddOptions()
    result = train_dsn(plan, config, options)
    if not (options.dist_ctx or distributed.active()).is_main:
        return None
    result.check_registrable()
    floors = floor_scores(plan.train_rows, plan.valid_rows, plan.test_rows)
    extra = {"description": description or plan.description,
             "training": {"data": str(plan.data), "rows": result.rows, "best_epoch": result.best_epoch,
                          "epochs_run": len(result.history) - 1, "hidden_state_cache": options.cache,
                          "precision": plan.precision, "count_statistics": result.stats,
                          "id_embeddings_trained": result.ids,
                          "shrinkage": result.shrinkage,
                          "calibration": result.calibration,
                          "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
                          "config": config.to_dict(), "history": result.history}}
    stored = dict(result.metrics(), **{f"{floor}_test_auc": m["auc"] for floor, m in floors.items()})
    stored.update({f"{floor}_test_auc_interval": [float(v) for v in m["auc_interval"]]
                   for floor, m in floors.items() if m.get("auc_interval") is not None})
    comparison = None
    if plan.compare:  # after the DSN is trained, on its very rows; a report only
        comparison = comparing.compare_baselines(plan.compare, plan.train_rows, plan.valid_rows, plan.test_rows,
                                                 seed=config.seed, dsn_probs=result.test_probs)
        stored[comparing.METRICS_KEY] = comparison
    notes: list[str] = []
    target = commit_bundle(plan.home, plan.model, plan.name, stored, extra, replace=plan.replace, notes=notes)
    return DomainAddResult(target, result, floors, notes, comparison)


# --------------------------------------------------------------------------- remove a domain
@dataclass
class DomainRemoveResult:
    removed: Path  # the bundle folder that was deleted, as the home shows it (home/domains/NAME)
    still_known: Any  # the registry's entry for the name after the removal (a package's, a definition), or None
    notes: list[str] = field(default_factory=list)


def removable(home: Path, name: str, registry: Optional[Registry] = None):
    """The local entry ``remove_domain`` would delete; RegistryError (saying what to do) when there is none.

    ``registry``: the home's registry when the caller has one (default: one is opened)."""
    return removable_entry(Registry.open(Path(home)) if registry is None else registry.discover(), name)


def remove_domain(home: Path, name: str, registry: Optional[Registry] = None) -> DomainRemoveResult:
    """Delete the local bundle of ``name`` (one snapshot switch under the home's lock).

    ``registry``: the home's registry when the caller has one, e.g. after :func:`removable` (default: one is
    opened); it is discovered once, and ``still_known`` is chosen from what it found."""
    home = Path(home)
    registry = Registry.open(home) if registry is None else registry.discover()
    notes: list[str] = []
    delete_bundle(home, name, notes=notes, registry=registry)  # refuses what the home does not own, saying who
    return DomainRemoveResult(home / DOMAINS_DIR / name, registry.without_local(name), notes)


# --------------------------------------------------------------------------- evaluate and predict
def serving_model(home: Path, domains: Optional[Sequence[str]], precision: str = DEFAULT_PRECISION,
                  quantize: str = "none"):
    """The home's core with the DSNs of ``domains`` (None: every domain), prepared for prediction only
    (LoRA merged, weights in ``precision``, int8 with ``quantize`` int8: see
    :mod:`unictr_core.modeling.fast_path`); returns (model, notes)."""
    if quantize not in precisions.QUANTIZE:
        raise ValueError(f"--quantize must be one of {', '.join(precisions.QUANTIZE)}, got '{quantize}'")
    precisions.resolve(precision, torch.device("cpu"), quantize == "int8")  # a bad combination fails before loading
    model, notes = load_model(Path(home), domains=None if domains is None else sorted(set(domains)))
    return prepare_for_prediction(model, precision, quantize), notes


@dataclass
class EvaluationResult:
    report: dict  # see unictr_core.fit.report.evaluation_report
    notes: list[str] = field(default_factory=list)  # domains predicted zero-shot, broken bundles


def evaluate(home: Path, samples: Sequence[Sample], reference: str = "general",
             batch_size: int = TrainConfig.eval_batch_size,
             precision: str = DEFAULT_PRECISION, quantize: str = "none", progress=None) -> EvaluationResult:
    """Per-domain AUC and logloss of the home's model on labelled ``samples``, with RelaImpr against
    ``reference``: ``general`` (the general network) or the path of an earlier report (JSON).
    ``progress``: a tqdm-like bar advanced by the rows predicted."""
    reference_report = None
    if reference != "general":
        reference_report = json.loads(Path(reference).read_text(encoding="utf-8"))
    model, notes = serving_model(home, [s.domain for s in samples], precision, quantize)
    predictions = predict_samples(model, samples, batch_size, progress=progress, precision=precision)
    report = evaluation_report(samples, predictions, reference if reference == "general" else Path(reference).stem,
                               reference_report)
    served = describe(model)  # what the prepared model computes in
    report["precision"] = "int8" if served["quantize"] == "int8" else served["precision"]
    return EvaluationResult(report, notes)


@dataclass
class PredictionResult:
    records: list[dict]  # one per sample, see unictr_core.modeling.predict.prediction_records
    predictions: Any  # unictr_core.modeling.predict.Predictions
    zero_shot_domains: list[str]  # domains the general network answered (no usable DSN)
    notes: list[str] = field(default_factory=list)


def predict(home: Path, samples: Sequence[Sample], domain: Optional[str] = None,
            batch_size: int = TrainConfig.eval_batch_size,
            precision: str = DEFAULT_PRECISION, quantize: str = "none") -> PredictionResult:
    """Click probabilities for ``samples``; ``domain`` scores every row as that domain.

    ``samples`` are not changed: with ``domain``, copies of them carry it (and the records name it).
    """
    if domain is not None:
        validate_domain_name(domain, "--domain")
        samples = [dataclasses.replace(s, domain=domain) for s in samples]
    model, notes = serving_model(home, [s.domain for s in samples], precision, quantize)
    predictions = predict_samples(model, samples, batch_size, precision=precision)
    zero = sorted({s.domain for s, z in zip(samples, predictions.zero_shot) if z})
    return PredictionResult(prediction_records(samples, predictions), predictions, zero, notes)


# --------------------------------------------------------------------------- rank candidates for one user
@dataclass
class RankResult:
    ranking: Any  # unictr_core.modeling.rank.Ranking: the candidates best first, and how the shared work was done
    notes: list[str] = field(default_factory=list)


def rank(home: Path, user: dict, candidates: Sequence[dict], batch_size: int = 64,
         precision: str = DEFAULT_PRECISION, quantize: str = "none", reuse_prefix: bool = True,
         source: str = "input") -> RankResult:
    """Score ``candidates`` (item fields) for one ``user`` (domain, user_id, history, ...) and sort them, best
    first; on a decoder backbone the prompt prefix they share runs once (:mod:`unictr_core.modeling.rank`)."""
    samples = candidate_samples(user, list(candidates), source)
    model, notes = serving_model(home, [samples[0].domain], precision, quantize)
    return RankResult(rank_samples(model, samples, batch_size, reuse_prefix), notes)
