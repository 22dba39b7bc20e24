"""Training one new DSN against a frozen core (``unictr domain add``).

The backbone, LoRA, general network and every other DSN are frozen, so the
backbone's hidden states of a sample never change during training. They are
computed once, in evaluation mode, and reused in every epoch (the shared
:mod:`unictr_core.modeling.hidden_cache`): only the layers the DSN reads
(``DomainNetwork.required_layers``) are kept, each sample unpadded, and every
batch is padded again to its own longest sample. With ``cache=False`` the backbone runs on every batch of every
epoch instead (same batches, same maths; used to measure the speed-up).

The new domain's data is split into train / valid / test: the validation part
picks the best epoch (early stopping) and fits the DSN's calibration; the test part is held out and
gives the metrics stored in the bundle: the DSN's AUC (with its bootstrap interval), logloss and ECE
next to the general network's zero-shot scores on the same rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unictr_core import metrics
from unictr_core.config import DEFAULT_PRECISION, DOMAIN_ADD_DEFAULTS, TrainConfig
from unictr_core.data.prompts import PromptTemplate
from unictr_core.data.schema import Sample
from unictr_core.fit import distributed
from unictr_core.fit.calibration import Calibration, fit_calibration
from unictr_core.fit.distributed import DistContext
from unictr_core.fit.loop import EarlyStopping, bce, end_epoch, optimiser_step
from unictr_core.fit.training import check_labelled, restore_state, seed_everything, trainable_state
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.batching import EncodedSamples
from unictr_core.modeling.hidden_cache import build_cache
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
    backbone each call."""

    def __init__(self, model: UniCTRModel, encoded: EncodedSamples, precision: str = "fp32"):
        self.model = model
        self.encoded = encoded
        self.precision = precision
        self.device = _device_of(model)

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, rows: Sequence[int]) -> tuple[States, torch.Tensor]:
        batch = self.encoded.batch(rows).to(self.device)
        with torch.no_grad(), precisions.autocast(self.precision, self.device):
            return self.model.head_inputs(batch.input_ids, batch.attention_mask, range(self.model.num_layers + 1))



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
    calibration: dict = field(default_factory=dict)  # see unictr_core.fit.calibration.Calibration.to_dict
    stats: bool = False  # the DSN reads count statistics

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



def _batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """The global batches of ``epoch`` (the same on every rank of a distributed run)."""
    order = distributed.epoch_permutation(n, seed, epoch)
    for start in range(0, n, batch_size):
        yield order[start: start + batch_size]


@torch.no_grad()
def _logits(model: UniCTRModel, name: str, source, encoded: EncodedSamples, batch_size: int, shard: Sequence[int],
            total: int, ctx: DistContext, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """The new DSN's and the general network's logits of a whole evaluation set.

    ``source`` holds this rank's ``shard`` of its ``total`` rows; the logits of all ranks are gathered.
    """
    dsn_logits = np.zeros(len(source))
    general_logits = np.zeros(len(source))
    for start in range(0, len(source), batch_size):
        rows = list(range(start, min(start + batch_size, len(source))))
        states, mask = source.batch(rows)
        with precisions.autocast(precision, mask.device):
            out = model.heads(states, mask, [name] * len(rows), _ids(encoded, rows, mask.device)).float()
        dsn_logits[rows] = out.dsn_logits.double().cpu().numpy()
        general_logits[rows] = out.general_logits.double().cpu().numpy()
    both = distributed.gather_rows(ctx, shard, np.column_stack([dsn_logits, general_logits]), total,
                                   f"gathering the predictions of '{name}'")
    return both[:, 0], both[:, 1]


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
    count features at :data:`WIDE_LR_SCALE` times it) and decaying along a cosine to the base rate
    (``head_lr[0]``) at the last epoch, so the first epoch already moves the DSN (a cyclic rate starting at the
    base kept a residual DSN at its start for epochs)."""
    wide = [] if dsn.wide is None else list(dsn.wide.parameters())
    rest = [p for p in dsn.parameters() if p.requires_grad and all(p is not w for w in wide)]
    base, peak = config.head_lr
    groups = [{"params": rest, "lr": peak}] + ([{"params": wide, "lr": peak * WIDE_LR_SCALE}] if wide else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total = max(1, config.epochs * steps_per_epoch)
    floor = base / peak if peak > 0 else 0.0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    return optimizer, schedule


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

    ``options``: cache, max_cache_gb, cache_dir, cache_storage, precision, progress (see :func:`train_domain`).
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
        budget = [options["max_cache_gb"]]  # shared by the three caches, in order
        progress = options["progress"] and ctx.is_main

        def cached(encoded: EncodedSamples, rows, what: str):
            part = build_cache(model, encoded, dsn.required_layers, rows, config.eval_batch_size,
                               options["precision"], options["cache_storage"], budget[0], options["cache_dir"],
                               progress, f"hidden states ({what})", head_inputs=True,
                               reuse=config.reuse_states)
            budget[0] = max(0.0, budget[0] - part.ram_bytes / 2**30)
            return part

        sources = [cached(e, rows, what) for e, rows, what in zip(sets, (owned, None, None),
                                                                  ("train", "valid", "test"))]
        cache_bytes = sum(src.nbytes for src in sources)
    else:
        sources = [LiveStates(model, e, options["precision"]) for e in sets]
    seconds["hidden_states"] = time.perf_counter() - tick
    return _Parts(sets, sources, shards, truth, _labels(sets[0], device), train_counts, cache_bytes)


def _part_scores(model: UniCTRModel, name: str, parts: _Parts, which: int, config: TrainConfig, ctx: DistContext,
                 precision: str, intervals: bool = False) -> tuple[dict, np.ndarray]:
    """Scores of part ``which`` (1 valid, 2 test) and the DSN's logits there."""
    dsn_logits, general_logits = _logits(model, name, parts.sources[which], parts.sets[which], config.eval_batch_size,
                                         parts.shards[which], len(parts.truth[which - 1]), ctx, precision)
    return _scores(parts.truth[which - 1], dsn_logits, general_logits, intervals), dsn_logits


def _train_epoch(model: UniCTRModel, dsn, net, parts: _Parts, config: TrainConfig, epoch: int, steps: int,
                 optim: tuple, ctx: DistContext, options: dict) -> tuple[list[float], int]:
    """One epoch over the training rows; returns this rank's batch losses and the optimiser steps so far."""
    optimizer, scheduler = optim
    cache, precision, bar = options["cache"], options["precision"], options["bar"]
    losses = []
    n = len(parts.sets[0])
    for rows in _batches(n, config.batch_size, config.seed, epoch):
        mine, padding = (distributed.owned_part_of_global_batch(rows, ctx) if cache
                         else distributed.shard_of_global_batch(rows, ctx))
        states, mask = parts.sources[0].batch(mine)
        ids = _ids(parts.sets[0], mine, mask.device)
        counts = None if parts.train_counts is None else parts.train_counts[mine]
        general_logits = None
        with precisions.autocast(precision, mask.device):
            if dsn.residual:
                with torch.no_grad():  # frozen and in eval mode: the general network's logits are constants
                    general_logits = model.general(states, mask, ids)
            logits = net(states, mask, general_logits, ids, counts)
        # mean over the global batch: each rank sums its rows (padding weighs 0); DDP averages over ranks
        weights = torch.full((len(mine),), 0.0 if padding else 1.0, device=logits.device)
        loss = bce(logits.float(), parts.train_labels[mine], weights, len(rows))
        optimiser_step(loss * ctx.world_size, dsn.parameters(), optimizer, scheduler, config.max_grad_norm,
                       backward=distributed.collective(ctx, f"training step {steps + 1}"))
        losses.append(float(loss.detach()))
        steps += 1
        bar.update(len(rows))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if config.max_steps is not None and steps >= config.max_steps:
            break
    return losses, steps


def train_domain(model: UniCTRModel, name: str, train: Sequence[Sample], valid: Sequence[Sample],
                 test: Sequence[Sample], template: Optional[PromptTemplate] = None,
                 config: Optional[TrainConfig] = None, cache: bool = True,
                 max_cache_gb: Optional[float] = None, progress: bool = True,
                 dist_ctx: Optional[DistContext] = None, residual: bool = True,
                 precision: str = DEFAULT_PRECISION,
                 cache_dir: Optional[Path] = None, cache_storage: Optional[str] = None,
                 on_epoch: Optional[Callable[[dict], None]] = None, stats: bool = True) -> DomainTrainResult:
    """Add a DSN for ``name`` to ``model`` and train only it; everything else stays frozen.

    With ``residual`` (the default) the new DSN starts as the general network's
    zero-shot predictor and learns the domain's correction to it. The untrained
    DSN is scored on the validation part as epoch 0, so the kept DSN is never
    worse on validation than what it started from (best epoch 0 = no correction
    helped).

    A standalone DSN (``residual=False``) starts from random weights: when no epoch
    beats that start on validation, :meth:`DomainTrainResult.check_registrable` refuses it.

    With ``stats`` (the default) the DSN also reads the domain's causal count statistics
    (:mod:`unictr_core.modeling.stats`): training rows their counts from earlier training rows, every
    other row those of the whole training part (stored in the DSN). After the best epoch is restored, the
    DSN's calibration (temperature scaling) is fitted on the validation part
    (:mod:`unictr_core.fit.calibration`; identity when it does not lower the validation logloss) and the
    held-out part is scored with it.

    On success the model holds the trained DSN (best validation epoch); on
    failure the new DSN is removed again and the model is as before.
    ``on_epoch(record)`` is called after every epoch (epoch, train_loss,
    valid_auc, valid_logloss, seconds), as the history stores it.

    Under torchrun (``dist_ctx``, default: the process group of this process) every
    rank caches the hidden states of its own shard of the training rows, computes
    its part of each global batch (DistributedDataParallel around the DSN) and its
    shard of the validation and test rows; the result equals a single-process
    run's up to float rounding.

    ``precision``: ``fp32``, ``bf16`` or ``auto`` (see :mod:`unictr_core.modeling.precision`).
    The cache (:mod:`unictr_core.modeling.hidden_cache`) keeps ``max_cache_gb`` (default: ``config``'s) in RAM and
    spills the rest to a memory-mapped file in ``cache_dir``; ``cache_storage``:
    fp16 / bf16 / fp32 (default: by precision and backbone).
    """
    config = config or replace(DOMAIN_ADD_DEFAULTS)
    max_cache_gb = config.max_cache_gb if max_cache_gb is None else max_cache_gb
    ctx = dist_ctx or distributed.active()
    precision = precisions.resolve(precision, ctx.device, training=True)
    started = time.perf_counter()
    for part, what in ((train, "training"), (valid, "validation"), (test, "held-out test")):
        check_labelled(part, f"{what} data of '{name}'")
        strangers = sorted({s.domain for s in part} - {name})
        if strangers:
            raise ValueError(f"{what} data of '{name}' holds rows of other domains: {', '.join(strangers)}")
    model.eval()
    model.freeze_core()
    seed_everything(config.seed)
    dsn = model.add_domain(name, template, DsnSpec(residual=residual, stats=stats, calibration=True))
    dsn.eval()  # a new module starts in training mode; the untrained start is scored (epoch 0) without dropout
    options = {"max_cache_gb": max_cache_gb, "cache_dir": cache_dir, "cache_storage": cache_storage,
               "precision": precision, "progress": progress, "cache": cache}
    try:
        seconds: dict[str, float] = {}
        parts = _prepare(model, dsn, (train, valid, test), config, ctx, options, seconds)
        stopping, history, eval_seconds, train_seconds = _fit(model, name, dsn, parts, config, ctx, options,
                                                              on_epoch)
        seconds["train"] = train_seconds
        restore_state(model, stopping.state)
        dsn.eval()
        tick = time.perf_counter()
        valid_scores, valid_logits = _part_scores(model, name, parts, 1, config, ctx, precision)
        calibration = _calibrate(dsn, valid_logits, parts.truth[0])
        test_metrics, _ = _part_scores(model, name, parts, 2, config, ctx, precision, intervals=True)
        seconds["evaluate"] = eval_seconds + time.perf_counter() - tick
        seconds["total"] = time.perf_counter() - started
    except BaseException:
        model.drop_dsn(name)
        raise
    return DomainTrainResult(name=name, best_epoch=stopping.epoch, valid_auc=stopping.details, test=test_metrics,
                             seconds=seconds, cache=cache, cache_bytes=parts.cache_bytes,
                             rows={"train": len(train), "valid": len(valid), "test": len(test)}, history=history,
                             residual=residual, calibration=calibration.to_dict(), stats=stats)


def _fit(model: UniCTRModel, name: str, dsn, parts: _Parts, config: TrainConfig, ctx: DistContext, options: dict,
         on_epoch) -> tuple[EarlyStopping, list[dict], float, float]:
    """Epoch 0 (the untrained start) and the training epochs, early-stopped on the validation AUC.

    Returns the early stopping (best epoch, state), the history, and the seconds of evaluation and training.
    """
    precision, progress = options["precision"], options["progress"]
    fit_started = time.perf_counter()
    net = distributed.data_parallel(dsn, ctx)
    optim = dsn_optimizer(dsn, config, math.ceil(len(parts.sets[0]) / config.batch_size))
    tick = time.perf_counter()
    start, _ = _part_scores(model, name, parts, 1, config, ctx, precision)
    eval_seconds = time.perf_counter() - tick
    stopping = EarlyStopping(config.patience, lambda: trainable_state(model),
                             score=-math.inf if start["auc"] is None else start["auc"], epoch=0,
                             state=trainable_state(model), details=start["auc"])
    history: list[dict] = [{"epoch": 0, "train_loss": None, "valid_auc": start["auc"],
                            "valid_logloss": start["logloss"], "seconds": round(eval_seconds, 2)}]
    if on_epoch is not None and ctx.is_main:
        on_epoch(history[0])
    steps = 0
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        dsn.train()
        bar = tqdm(total=len(parts.sets[0]), desc=f"{name} epoch {epoch}/{config.epochs}", unit="sample",
                   disable=not (progress and ctx.is_main))
        losses, steps = _train_epoch(model, dsn, net, parts, config, epoch, steps, optim, ctx, dict(options, bar=bar))
        dsn.eval()
        tick = time.perf_counter()
        valid_metrics, _ = _part_scores(model, name, parts, 1, config, ctx, precision)
        eval_seconds += time.perf_counter() - tick
        valid_auc = valid_metrics["auc"]
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", valid_auc="n/a" if valid_auc is None else f"{valid_auc:.4f}")
        bar.close()
        train_loss = distributed.all_reduce_sum(ctx, [float(np.sum(losses))], "summing the loss")[0] / len(losses)
        record = {"epoch": epoch, "train_loss": train_loss, "valid_auc": valid_auc,
                  "valid_logloss": valid_metrics["logloss"], "seconds": round(time.perf_counter() - epoch_started, 2)}
        out_of_steps = config.max_steps is not None and steps >= config.max_steps
        if end_epoch(stopping, history, record, valid_auc, out_of_steps, ctx, on_epoch, f"early stopping of '{name}'"):
            break
    train_seconds = time.perf_counter() - fit_started - eval_seconds
    return stopping, history, eval_seconds, train_seconds
