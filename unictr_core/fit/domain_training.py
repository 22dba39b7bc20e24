"""Training one new DSN against a frozen core (``unictr domain add``).

The backbone, LoRA, general network and every other DSN are frozen, so the
backbone's hidden states of a sample never change during training. They are
computed once, in evaluation mode, and reused in every epoch (the shared
:mod:`unictr_core.modeling.hidden_cache`): only the layers the DSN reads
(``DomainNetwork.required_layers``) are kept, each sample unpadded, and every
batch is padded again to its own longest sample. Without the cache (``DomainAddOptions(cache=False)``) the
backbone runs on every batch of every epoch instead (same batches, same maths; used to measure the speed-up).

The new domain's data is split into train / valid / test: the validation part picks the best epoch (early
stopping), shrinks a residual DSN's correction and fits the DSN's calibration; the test part is held out and
gives the metrics stored in the bundle: the DSN's AUC (with its bootstrap interval), logloss and ECE next to
the general network's zero-shot scores on the same rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from unictr_core import metrics
from unictr_core.config import DOMAIN_ADD_DEFAULTS, TrainConfig
from unictr_core.data.prompts import PromptTemplate
from unictr_core.data.schema import Sample
from unictr_core.fit import distributed
from unictr_core.fit.calibration import Calibration, fit_calibration
from unictr_core.fit.distributed import DistContext
from unictr_core.fit.loop import (Evaluation, GlobalBatchEpochs, bce, cosine_decay, optimiser_step, run_epochs,
                                  seed_everything)
from unictr_core.fit.shrinkage import Shrinkage, fit_shrinkage
from unictr_core.fit.training import check_labelled
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.batching import EncodedSamples
from unictr_core.modeling.hidden_cache import build_cache
from unictr_core.modeling.ids import id_table_parameters
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.networks import DsnSpec
from unictr_core.modeling.predict import tokenize_samples
from unictr_core.modeling.stats import causal_counts

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

States = list[Optional[torch.Tensor]]


# --------------------------------------------------------------------------- data
def domain_splits(path: Path, name: str, seed: int = 0, all_rows: bool = False
                  ) -> tuple[list[Sample], list[Sample], list[Sample], list[str]]:
    """Train / valid / test rows of domain ``name`` from a dataset folder or one .jsonl/.csv file.

    A dataset folder gives its own splits (rows of ``name`` only). A file is
    split 80/10/10 per time (random, seeded, when a row has no timestamp). A
    file holding rows of exactly one other domain is taken as ``name``; with
    ``all_rows`` every row of the folder or file is taken as ``name``.
    Returns the three parts and notes for the user.
    """
    from unictr_core.data.data_io import read_samples
    from unictr_core.data.dataset import load_dataset, split_by_time, split_random

    path = Path(path)
    notes: list[str] = []
    if path.is_dir():
        dataset = load_dataset(path)
        parts = [[replace(s, domain=name) for s in part] if all_rows else [s for s in part if s.domain == name]
                 for part in (dataset.train, dataset.valid, dataset.test)]
        if not parts[0]:
            raise ValueError(f"{path / 'train.jsonl'}: no rows of domain '{name}' "
                             f"(domains there: {', '.join(dataset.domains) or 'none'})")
        if not parts[1] or not parts[2]:
            raise ValueError(f"{path}: domain '{name}' needs rows in valid.jsonl and test.jsonl too")
        return parts[0], parts[1], parts[2], notes
    samples = read_samples(path, require_labels=True)
    held = _row_counts(samples)  # before any relabelling, for the messages
    if all_rows:
        samples = [replace(s, domain=name) for s in samples]
    domains = sorted({s.domain for s in samples})
    mine = [s for s in samples if s.domain == name]
    if not mine:
        if len(domains) != 1:
            raise ValueError(f"{path}: no rows of domain '{name}'; the file holds {', '.join(domains) or 'no rows'}")
        notes.append(f"{path}: all {len(samples)} rows are domain '{domains[0]}'; taken as '{name}'")
        mine = [replace(s, domain=name) for s in samples]
    elif len(domains) > 1:
        notes.append(f"{path}: using the {len(mine)} rows of '{name}' and ignoring {len(samples) - len(mine)} "
                     f"rows of other domains")
    if all(s.timestamp is not None for s in mine):
        train, valid, test = split_by_time(mine, SPLIT_FRACTIONS)
        notes.append(f"split by time: {len(train)} train / {len(valid)} valid / {len(test)} held-out test rows")
    else:
        train, valid, test = split_random(mine, SPLIT_FRACTIONS, seed)
        notes.append(f"rows without timestamps: random split (seed {seed}): {len(train)} train / {len(valid)} "
                     f"valid / {len(test)} held-out test rows")
    if not valid or not test:
        relabelled = (f"; its rows of '{domains[0]}' were taken as '{name}'"
                      if len(domains) == 1 and domains[0] != name else "")
        raise ValueError(f"{path}: too few rows of '{name}' ({len(mine)}) for a train / valid / test split "
                         f"({len(train)} train / {len(valid)} valid / {len(test)} test); the file holds "
                         f"{held}{relabelled}")
    return train, valid, test, notes


def _row_counts(samples) -> str:
    """``"movies: 60 rows, books: 3 rows"``: how many rows of each domain ``samples`` hold."""
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.domain] = counts.get(sample.domain, 0) + 1
    return ", ".join(f"{domain}: {count} rows" for domain, count in sorted(counts.items())) or "no rows"


# --------------------------------------------------------------------------- hidden states
class LiveStates:
    """The interface of :class:`~unictr_core.modeling.hidden_cache.HiddenStateCache`, running the frozen
    backbone each call; ``layers``: the hidden states the new DSN reads (only those are summarised)."""

    def __init__(self, model: UniCTRModel, encoded: EncodedSamples, layers: Sequence[int], precision: str = "fp32"):
        self.model = model
        self.encoded = encoded
        self.layers = list(layers)
        self.precision = precision
        self.device = _device_of(model)

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, rows: Sequence[int]) -> tuple[States, torch.Tensor]:
        batch = self.encoded.batch(rows).to(self.device)
        with torch.no_grad(), precisions.autocast(self.precision, self.device):
            return self.model.head_inputs(batch.input_ids, batch.attention_mask, self.layers)



def _ids(encoded: EncodedSamples, rows: Sequence[int], device: torch.device) -> Optional[torch.Tensor]:
    """The ID slots of ``rows`` of ``encoded`` for an ID-aware model (None for a text-only one)."""
    ids = encoded.ids(rows)
    return None if ids is None else ids.to(device)


def _labels(encoded: EncodedSamples, device: torch.device) -> torch.Tensor:
    return torch.tensor([float(s.label) for s in encoded.samples], dtype=torch.float32, device=device)


def _device_of(model: UniCTRModel) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- training
@dataclass
class DomainTrainResult:
    name: str
    best_epoch: int
    valid_auc: Optional[float]
    test: dict  # rows, positive_rate, auc, logloss, general_auc, general_logloss, ece, general_ece,
    #            auc_interval, general_auc_interval, auc_gain (held-out part; see _scores)
    seconds: dict  # encode (tokenize), hidden_states (backbone passes before training), train, evaluate, total
    cache: bool
    cache_bytes: int
    rows: dict  # train / valid / test row counts
    history: list[dict] = field(default_factory=list)
    residual: bool = True
    # the share of the residual DSN's correction kept (unictr_core.fit.shrinkage.Shrinkage.to_dict; empty: standalone
    # or TrainConfig.dsn_shrinkage False)
    shrinkage: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)  # see unictr_core.fit.calibration.Calibration.to_dict
    stats: bool = False  # the DSN reads count statistics
    ids: bool = False  # the DSN's own ID embeddings were trained (DomainAddOptions.ids; False: none or kept at zero)
    test_probs: Optional[np.ndarray] = None  # the DSN's (calibrated) probabilities of the test rows, in their order

    def check_registrable(self) -> None:
        """ValueError when the DSN must not be registered: a standalone DSN that never beat its random start.

        (A residual DSN's start is the general network, so best epoch 0 is a sound result for it.)
        """
        if not self.residual and self.valid_auc is None:
            raise ValueError(
                f"the standalone DSN of '{self.name}' could not be validated (validation AUC undefined: "
                f"{self.rows.get('valid', 0)} validation rows, not both labels), so nothing shows it beat its random "
                "start; nothing was registered. Use more rows, or the residual DSN (the default, without "
                "--standalone)")
        if not self.residual and self.best_epoch == 0:
            start = self.history[0]["valid_auc"] if self.history else None
            raise ValueError(
                f"the standalone DSN of '{self.name}' never beat its untrained (random) start on validation (AUC "
                f"{'n/a' if start is None else f'{start:.4f}'} at epoch 0, no better epoch in "
                f"{len(self.history) - 1}); nothing was registered. Use more rows or epochs, or the residual DSN "
                "(the default, without --standalone), which starts from the general network")

    def metrics(self) -> dict:
        """What the bundle stores as its metrics."""
        t = self.test
        out = {"test_rows": t["rows"], "test_auc": t["auc"], "test_logloss": t["logloss"],
               "zero_shot_auc": t["general_auc"], "zero_shot_logloss": t["general_logloss"],
               "valid_auc": self.valid_auc, "valid_rows": self.rows.get("valid"), "best_epoch": self.best_epoch}
        optional = {"test_ece": t.get("ece"), "zero_shot_ece": t.get("general_ece"),
                    "test_auc_interval": _pair(t.get("auc_interval")),
                    "zero_shot_auc_interval": _pair(t.get("general_auc_interval"))}
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def _pair(interval) -> Optional[list[float]]:
    """An interval as a YAML-friendly [low, high] list."""
    return None if interval is None else [float(interval[0]), float(interval[1])]



def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def _scores(labels: np.ndarray, dsn_logits: np.ndarray, general_logits: np.ndarray, intervals: bool = False) -> dict:
    """AUC / logloss of the DSN and of the general network (zero-shot) on one part; with ``intervals`` (the
    held-out part) also ECE, the bootstrap 95 % AUC intervals and the DSN's paired AUC gain over zero-shot."""
    y, dsn, general = labels, _sigmoid(dsn_logits), _sigmoid(general_logits)
    out = {"rows": len(y), "positive_rate": float(y.mean()) if len(y) else None,
           "auc": metrics.auc(y, dsn), "logloss": metrics.logloss(y, dsn),
           "general_auc": metrics.auc(y, general), "general_logloss": metrics.logloss(y, general)}
    if intervals:
        out.update(ece=metrics.ece(y, dsn), general_ece=metrics.ece(y, general),
                   auc_interval=metrics.auc_interval(y, dsn), general_auc_interval=metrics.auc_interval(y, general),
                   auc_gain=metrics.paired_auc_gain(y, dsn, general))
    return out


def _calibrate(dsn, valid_logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit the DSN's calibration (temperature) on its validation logits and store it in the DSN (identity: no
    gain)."""
    calibration = fit_calibration(valid_logits, labels)
    with torch.no_grad():
        dsn.calibration.copy_(torch.tensor([calibration.scale, calibration.bias]))
    return calibration


WIDE_LR_SCALE = 10.0  # the linear term on the count features learns this many times faster than the rest


def dsn_optimizer(dsn, config: TrainConfig, steps_per_epoch: int):
    """AdamW over the new DSN, starting at the peak learning rate (``config.head_lr[1]``; the wide term on the
    count features at :data:`WIDE_LR_SCALE` times it, the ID tables at ``config.id_lr_scale`` times it) and
    decaying along a cosine to the base rate (``head_lr[0]``) at the last epoch, so the first epoch already moves
    the DSN (a cyclic rate starting at the base kept a residual DSN at its start for epochs)."""
    wide = [] if dsn.wide is None else list(dsn.wide.parameters())
    ids = id_table_parameters(dsn) if config.id_lr_scale != 1.0 else []
    apart = {id(p) for p in wide + ids}
    rest = [p for p in dsn.parameters() if p.requires_grad and id(p) not in apart]
    base, peak = config.head_lr
    groups = [{"params": params, "lr": peak * scale}
              for params, scale in ((rest, 1.0), (wide, WIDE_LR_SCALE), (ids, config.id_lr_scale)) if params]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    floor = base / peak if peak > 0 else 0.0
    return optimizer, cosine_decay(optimizer, [floor] * len(groups), config.epochs * steps_per_epoch)


@dataclass
class _Parts:
    """The three parts of a domain add, ready to train on: encoded rows, hidden-state sources, shards, labels."""

    sets: list            # EncodedSamples of train / valid / test (valid and test: this rank's shard)
    sources: list         # hidden-state caches (or LiveStates) of the same
    shards: list          # the rows of each part this rank holds
    truth: list           # labels of valid / test (all rows)
    train_labels: torch.Tensor
    train_counts: Optional[torch.Tensor]  # causal count statistics of the training rows (a DSN with statistics)
    cache_bytes: int = 0


def _prepare(model: UniCTRModel, dsn, parts: tuple, config: TrainConfig, ctx: DistContext, options: dict,
             seconds: dict) -> _Parts:
    """Encode the three parts, fill the DSN's count tables, and cache (or not) their hidden states.

    ``options``: cache, precision (resolved), progress (see :func:`train_domain`); the cache's budget, folder and
    storage are ``config``'s.
    """
    train, valid, test = parts
    tick = time.perf_counter()
    # training rows: all encoded, each rank computes (caches) only its own; valid / test: this rank's shard
    shards = [list(range(len(train)))] + [distributed.eval_shard(len(part), ctx) for part in (valid, test)]
    sets = [tokenize_samples(model, [part[i] for i in shard]) for part, shard in zip(parts, shards)]
    truth = [np.array([int(s.label) for s in part], dtype=np.int64) for part in (valid, test)]
    device = _device_of(model)
    train_counts = None
    if dsn.counts is not None:
        dsn.counts.fit(train)  # prediction time: the whole training part
        train_counts = torch.from_numpy(causal_counts(train, model.config.id_buckets)).float().to(device)
    seconds["encode"] = time.perf_counter() - tick
    tick = time.perf_counter()
    cache_bytes = 0
    if options["cache"]:
        owned = distributed.owned_rows(len(train), ctx) if ctx.is_distributed else None
        budget = [config.max_cache_gb]  # shared by the three caches, in order
        progress = options["progress"] and ctx.is_main

        def cached(encoded: EncodedSamples, rows, what: str):
            settings = replace(config, precision=options["fill_precision"], max_cache_gb=budget[0])
            part = build_cache(model, encoded, dsn.required_layers, rows, settings, progress, f"hidden states ({what})",
                               head_inputs=True)
            budget[0] = max(0.0, budget[0] - part.ram_bytes / 2**30)
            return part

        sources = [cached(e, rows, what) for e, rows, what in zip(sets, (owned, None, None),
                                                                  ("train", "valid", "test"))]
        cache_bytes = sum(src.nbytes for src in sources)
    else:
        sources = [LiveStates(model, e, dsn.required_layers, options["precision"]) for e in sets]
    seconds["hidden_states"] = time.perf_counter() - tick
    return _Parts(sets, sources, shards, truth, _labels(sets[0], device), train_counts, cache_bytes)


@dataclass
class DomainAddOptions:
    """How :func:`train_domain` runs, beside its :class:`~unictr_core.config.TrainConfig`.

    ``stats``: the DSN also reads the domain's count statistics. ``ids``: train the DSN's own ID embeddings (a
    core trained with ``--ids dsn|all`` gives every DSN a table; default); False leaves the table at its zero
    start (no ID information; the count statistics still carry the user's and item's history). ``cache``: the
    frozen backbone's hidden states are computed once (default) instead of in every batch of every epoch (same
    batches, same maths).
    ``progress``: tqdm bars; ``dist_ctx``: the process group (default: this process's);
    ``on_epoch(record)``: called on rank 0 after every epoch, epoch 0 included, with the record the history
    stores (epoch, train_loss, valid_auc, valid_logloss, seconds).
    """

    stats: bool = True
    ids: bool = True
    cache: bool = True
    progress: bool = True
    dist_ctx: Optional[DistContext] = None
    on_epoch: Optional[Callable[[dict], None]] = None


def train_domain(model: UniCTRModel, name: str, train: Sequence[Sample], valid: Sequence[Sample],
                 test: Sequence[Sample], template: Optional[PromptTemplate] = None,
                 config: Optional[TrainConfig] = None, options: Optional[DomainAddOptions] = None
                 ) -> DomainTrainResult:
    """Add a DSN for ``name`` to ``model`` and train only it; everything else stays frozen.

    ``config`` (default: :data:`unictr_core.config.DOMAIN_ADD_DEFAULTS`): the training settings, the kind of DSN
    (``dsn``), the ``precision`` (see :mod:`unictr_core.modeling.precision`) and the hidden-state cache's
    ``max_cache_gb``, ``cache_dir`` (None: the system's temp folder) and ``cache_dtype``
    (:mod:`unictr_core.modeling.hidden_cache`). ``options``: see :class:`DomainAddOptions`.

    A residual DSN (the default) starts as the general network's zero-shot predictor and learns the domain's
    correction to it; a standalone one starts from random weights. The untrained DSN is scored on the
    validation part as epoch 0, so the kept DSN is never worse on validation than its start (best epoch 0:
    no epoch helped; a standalone DSN is then refused by :meth:`DomainTrainResult.check_registrable`).
    With ``options.stats`` the DSN also reads the domain's causal count statistics
    (:mod:`unictr_core.modeling.stats`). After the best epoch is restored, a residual DSN's correction is
    shrunk on the validation part (``config.dsn_shrinkage``, :mod:`unictr_core.fit.shrinkage`), then the DSN's
    calibration is fitted there (:mod:`unictr_core.fit.calibration`) and the held-out part is scored with it.

    On success the model holds the trained DSN; on failure the new DSN is removed again and the model is as
    before. Under torchrun (``options.dist_ctx``, default: this process's group) every rank caches its shard
    of the training rows, computes its part of each global batch and its shard of the validation and test
    rows; the result equals a single-process run's up to float rounding.
    """
    config = config or replace(DOMAIN_ADD_DEFAULTS)
    options = options or DomainAddOptions()
    ctx = options.dist_ctx or distributed.active()
    precision = precisions.resolve(config.precision, ctx.device, training=True)
    started = time.perf_counter()
    _check_parts(name, (train, valid, test))
    model.eval()
    model.freeze_core()
    seed_everything(config.seed)
    residual = config.dsn == "residual"
    dsn = model.add_domain(name, template, DsnSpec(residual=residual, stats=options.stats, calibration=True))
    dsn.eval()  # a new module starts in training mode; the untrained start is scored (epoch 0) without dropout
    if dsn.id_embedding is not None and not options.ids:
        dsn.id_embedding.requires_grad_(False)  # stays zero: not in the optimiser, the snapshots or the gradients
    cache_options = {"precision": precision, "fill_precision": precisions.resolve_fill(config.fill_precision, precision,
                                                                                       ctx.device),
                     "progress": options.progress, "cache": options.cache}
    try:
        seconds: dict[str, float] = {}
        parts = _prepare(model, dsn, (train, valid, test), config, ctx, cache_options, seconds)
        task = _DomainEpochs(model, name, parts, config, ctx, precision)
        run = run_epochs(task, config.epochs, config.patience, ctx, options.on_epoch, options.progress,
                         score_start=True)
        seconds["train"] = sum(run.train_seconds)
        tick = time.perf_counter()
        valid_logits, general_logits = task.logits(1)
        shrinkage: Optional[Shrinkage] = None
        if residual and config.dsn_shrinkage:
            shrinkage = fit_shrinkage(general_logits, valid_logits, parts.truth[0])
            dsn.scale_correction(shrinkage.scale)
            valid_logits = shrinkage.apply(general_logits, valid_logits)
        calibration = _calibrate(dsn, valid_logits, parts.truth[0])
        test_metrics, test_logits = task.scores(2, intervals=True)
        seconds["evaluate"] = run.eval_seconds + time.perf_counter() - tick
        seconds["total"] = time.perf_counter() - started
    except BaseException:
        model.drop_dsn(name)
        raise
    return DomainTrainResult(name=name, best_epoch=run.stopping.epoch, valid_auc=run.stopping.details,
                             test=test_metrics, seconds=seconds, cache=options.cache, cache_bytes=parts.cache_bytes,
                             rows={"train": len(train), "valid": len(valid), "test": len(test)}, history=run.history,
                             residual=residual, shrinkage=shrinkage.to_dict() if shrinkage else {},
                             calibration=calibration.to_dict(), stats=options.stats,
                             ids=options.ids and dsn.id_embedding is not None,
                             test_probs=_sigmoid(test_logits))


def _check_parts(name: str, parts: tuple) -> None:
    """ValueError unless the train / valid / test parts are labelled rows of domain ``name`` only."""
    for part, what in zip(parts, ("training", "validation", "held-out test")):
        check_labelled(part, f"{what} data of '{name}'")
        strangers = sorted({s.domain for s in part} - {name})
        if strangers:
            raise ValueError(f"{what} data of '{name}' holds rows of other domains: {', '.join(strangers)}")


class _DomainEpochs(GlobalBatchEpochs):
    """The domain add's part of :func:`unictr_core.fit.loop.run_epochs`: global batch steps of the new DSN alone
    over the training part's hidden states, scored on the validation part."""

    def __init__(self, model: UniCTRModel, name: str, parts: _Parts, config: TrainConfig, ctx: DistContext,
                 precision: str):
        super().__init__(model, model.dsns[name], config, ctx, len(parts.sets[0]))
        self.label, self.parts, self.dsn, self.precision = name, parts, model.dsns[name], precision
        self.net = distributed.data_parallel(self.dsn, ctx)
        self.optimizer, self.scheduler = dsn_optimizer(self.dsn, config, math.ceil(self.rows / config.batch_size))
        self.cached = not isinstance(parts.sources[0], LiveStates)
        self.start_logloss: Optional[float] = None  # validation logloss of the untrained start (see evaluate)

    def step(self, rows: Sequence[int]) -> float:
        """One optimiser step of the DSN on the global batch ``rows``; returns this rank's part of its loss."""
        parts, dsn, ctx = self.parts, self.dsn, self.ctx
        mine, padding = (distributed.owned_part_of_global_batch(rows, ctx) if self.cached
                         else distributed.shard_of_global_batch(rows, ctx))
        states, mask = parts.sources[0].batch(mine)
        ids = _ids(parts.sets[0], mine, mask.device)
        counts = None if parts.train_counts is None else parts.train_counts[mine]
        general_logits = None
        with precisions.autocast(self.precision, mask.device):
            if dsn.residual:
                with torch.no_grad():  # frozen and in eval mode: the general network's logits are constants
                    general_logits = self.model.general(states, mask, ids)
            logits = self.net(states, mask, general_logits, ids, counts)
        # mean over the global batch: each rank sums its rows (padding weighs 0); DDP averages over ranks
        weights = torch.full((len(mine),), 0.0 if padding else 1.0, device=logits.device)
        loss = bce(logits.float(), parts.train_labels[mine], weights, len(rows))
        optimiser_step(loss * ctx.world_size, dsn.parameters(), self.optimizer, self.scheduler,
                       self.config.max_grad_norm,
                       backward=distributed.collective(ctx, f"training step {self.steps + 1}"))
        return float(loss.detach())

    def evaluate(self) -> Evaluation:
        """The validation AUC and logloss. A residual DSN's epoch is kept only where its validation logloss is
        no worse than its start's (epoch 0: the general network's zero-shot prediction): an over-confident DSN
        (on Amazon fashion, a better validation AUC at 2-4x the start's logloss) is never registered."""
        scores, _ = self.scores(1)
        logloss = scores["logloss"]
        if self.start_logloss is None:  # the first evaluation is the untrained start (run_epochs' score_start)
            self.start_logloss = logloss
        eligible = not (self.dsn.residual and logloss is not None and self.start_logloss is not None
                        and logloss > self.start_logloss)
        return Evaluation(scores["auc"], logloss, details=scores["auc"], eligible=eligible)

    def scores(self, which: int, intervals: bool = False) -> tuple[dict, np.ndarray]:
        """Scores of part ``which`` (1 valid, 2 test; see :func:`_scores`) and the DSN's logits there."""
        dsn_logits, general_logits = self.logits(which)
        return _scores(self.parts.truth[which - 1], dsn_logits, general_logits, intervals), dsn_logits

    @torch.no_grad()
    def logits(self, which: int) -> tuple[np.ndarray, np.ndarray]:
        """The new DSN's and the general network's logits of a whole evaluation part (1 valid, 2 test).

        The part's source holds this rank's shard of its rows; the logits of all ranks are gathered.
        """
        source, encoded, batch_size = self.parts.sources[which], self.parts.sets[which], self.config.eval_batch_size
        dsn_logits = np.zeros(len(source))
        general_logits = np.zeros(len(source))
        for start in range(0, len(source), batch_size):
            rows = list(range(start, min(start + batch_size, len(source))))
            states, mask = source.batch(rows)
            ids = _ids(encoded, rows, mask.device)
            with precisions.autocast(self.precision, mask.device):
                out = self.model.heads(states, mask, [self.label] * len(rows), ids).float()
            dsn_logits[rows] = out.dsn_logits.double().cpu().numpy()
            general_logits[rows] = out.general_logits.double().cpu().numpy()
        both = distributed.gather_rows(self.ctx, self.parts.shards[which],
                                       np.column_stack([dsn_logits, general_logits]), len(self.parts.truth[which - 1]),
                                       f"gathering the predictions of '{self.label}'")
        return both[:, 0], both[:, 1]
