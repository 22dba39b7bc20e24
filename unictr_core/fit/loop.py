"""The one trainer of UniCTR, the domain add and the baselines: loss, optimiser step, early stopping, epoch loop.

* :func:`bce` - the one loss: binary cross-entropy of click logits, a mean over the rows, or a weighted sum over
  a shard's rows divided by the global batch's count (the shards' parts then add up to the global mean);
  :func:`ctr_loss` (Uni-CTR's: general network + each row's DSN) and :func:`shard_loss` (a rank's part of it) are
  built from it.
* :func:`optimiser_step` - zero the gradients, backward, clip, step the optimiser and the learning-rate schedule.
* :func:`epoch_score` - the one rule for choosing epochs: the validation AUC; where it is undefined (one label
  class in the validation rows) minus the training loss, so a run still keeps its best (lowest-loss) epoch.
* :class:`EarlyStopping` - the best epoch, its state and its details; stops after ``patience`` epochs without a
  better score. In a distributed run rank 0's decision is broadcast, so every rank leaves the loop together.
* :func:`run_epochs` - the one epoch loop: (epoch 0: score the untrained start,) train an epoch, evaluate, record,
  early-stop, restore the best epoch. Each use supplies an :class:`EpochTask` (its training epoch and its
  evaluation): joint training (:func:`unictr_core.fit.training.train_unictr`), the domain add
  (:func:`unictr_core.fit.domain_training.train_domain`) and the baselines
  (:func:`unictr_core.baselines.trainer.fit_baseline`).
* :class:`GlobalBatchEpochs` - what joint training and the domain add share: the optimiser steps of an epoch
  over the global batches of :func:`global_batches` (the same on every rank), capped by ``max_steps``;
  :func:`seed_everything`, :func:`trainable_state` and :func:`restore_state` - the seeding and the kept state.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def bce(logits: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor] = None,
        count: Optional[int] = None) -> torch.Tensor:
    """Binary cross-entropy of ``logits`` against 0/1 ``labels``: the mean over the rows; with ``weights`` (0 for
    padding rows) the weighted sum divided by ``count`` (the rows of the whole global batch)."""
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    per_row = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return (per_row * weights).sum() / count


def ctr_loss(output, labels: torch.Tensor) -> torch.Tensor:
    """Uni-CTR's masked loss on a :class:`~unictr_core.modeling.model.ModelOutput`: BCE of the general network
    over every row + BCE of each row's own DSN over the rows that have one."""
    labels = labels.float()
    loss = bce(output.general_logits, labels)
    if bool(output.has_dsn.any()):
        rows = output.has_dsn
        loss = loss + bce(output.dsn_logits[rows], labels[rows])
    return loss


def shard_loss(output, labels: torch.Tensor, weights: torch.Tensor, global_rows: int,
               global_dsn_rows: int) -> torch.Tensor:
    """This shard's part of the loss of a global batch; the parts of all shards sum to :func:`ctr_loss`.

    Each of ``ctr_loss``'s two means is a sum over the rows of every shard divided by a count over the whole
    global batch, so the shard sums its rows (times ``weights``: 0 for padding rows) and divides by the global
    counts.
    """
    labels = labels.float()
    loss = bce(output.general_logits, labels, weights, global_rows)
    if global_dsn_rows:
        loss = loss + bce(output.dsn_logits, labels, weights * output.has_dsn.to(weights.device, weights.dtype),
                          global_dsn_rows)
    return loss


def optimiser_step(loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter], optimizer, scheduler=None,
                   max_grad_norm: float = 0.0, backward: Optional[ContextManager] = None) -> None:
    """One optimiser step on ``loss``: clip the gradients of ``parameters`` to ``max_grad_norm`` (0: no
    clipping), then step the optimiser and ``scheduler``. ``backward``: a context the backward pass runs in
    (e.g. :func:`unictr_core.fit.distributed.collective`, which turns a lost peer into an error)."""
    optimizer.zero_grad(set_to_none=True)
    with backward if backward is not None else contextlib.nullcontext():
        loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()


def cosine_decay(optimizer, floors: Sequence[float], total_steps: int):
    """A scheduler that takes each parameter group of ``optimizer`` from its rate at construction (the peak) along
    a half cosine down to ``floors[i]`` times it at step ``total_steps``, and holds it there."""
    total = max(1, total_steps)

    def factor(floor: float) -> Callable[[int], float]:
        return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(f) for f in floors])


def epoch_score(valid_auc: Optional[float], train_loss: float) -> float:
    """The score epochs are compared by: the validation AUC, or minus the training loss where it is undefined."""
    return valid_auc if valid_auc is not None else -train_loss


class EarlyStopping:
    """Keeps the best epoch: its score, number, state (``snapshot()``) and details; counts epochs without one.

    The starting point (``epoch`` 0, e.g. an untrained DSN scored before training) may be given; by default
    any first score beats it.
    """

    def __init__(self, patience: int, snapshot: Callable[[], Any], score: float = -math.inf, epoch: int = 0,
                 state: Any = None, details: Any = None):
        self.patience = patience
        self.snapshot = snapshot
        self.score, self.epoch, self.state, self.details = score, epoch, state, details
        self.stale = 0

    def update(self, epoch: int, score: float, details: Any = None, out_of_steps: bool = False, ctx=None,
               what: str = "early stopping") -> bool:
        """Record an epoch's ``score``; True when training should stop (``patience`` epochs without a better
        score, or ``out_of_steps``). With a distributed ``ctx``, rank 0's decision counts on every rank."""
        improved = score > self.score
        stale = 0 if improved else self.stale + 1
        stop = stale >= self.patience or out_of_steps
        if ctx is not None:
            from unictr_core.fit import distributed

            # every rank computed the same, but only rank 0's decision counts: no rank can leave the loop alone
            improved, stale, stop = distributed.broadcast(ctx, (improved, stale, stop), what)
        self.stale = stale
        if improved:
            self.score, self.epoch, self.state, self.details = score, epoch, self.snapshot(), details
        return stop


def record_epoch(history: list, record: dict, ctx, on_epoch: Optional[Callable[[dict], None]]) -> None:
    """Append an epoch's ``record`` (epoch, train_loss, valid_auc, ...) to ``history`` and hand it to ``on_epoch``
    (on rank 0; ``ctx`` None: one process)."""
    history.append(record)
    if on_epoch is not None and (ctx is None or ctx.is_main):
        on_epoch(record)


# --------------------------------------------------------------------------- the epoch loop
@dataclass
class Evaluation:
    """An evaluation on the validation rows: its AUC (None: undefined), logloss, what the early stopping keeps of
    the best epoch (``details``) and more fields for the epoch's record (``extra``)."""

    auc: Optional[float]
    logloss: Optional[float] = None
    details: Any = None
    extra: dict = field(default_factory=dict)
    eligible: bool = True  # False: this epoch may not be kept, whatever its score (see _DomainEpochs.evaluate)


class EpochTask(Protocol):
    """What one use of :func:`run_epochs` supplies: its training epoch and its evaluation."""

    label: str  # names the run in the progress bar, messages and logs ("" for joint training)
    rows: int  # training rows of an epoch (the progress bar's total)

    def snapshot(self) -> Any:
        """The trainable state, to restore the best epoch from."""

    def restore(self, state: Any) -> None:
        """Put a :meth:`snapshot` back and leave the model ready to predict."""

    def train_epoch(self, epoch: int, bar) -> tuple[float, bool]:
        """Train one epoch (``bar``: a tqdm bar of its rows); returns the training loss and whether the step
        budget is spent."""

    def evaluate(self) -> Evaluation:
        """Score the validation rows."""


@dataclass
class EpochsRun:
    """What :func:`run_epochs` returns: the early stopping (best epoch, score, details), the history of epoch
    records, each epoch's training seconds and the seconds spent evaluating (epoch 0 included)."""

    stopping: EarlyStopping
    history: list[dict]
    train_seconds: list[float]
    eval_seconds: float


def run_epochs(task: EpochTask, epochs: int, patience: int, ctx=None, on_epoch: Optional[Callable[[dict], None]] = None,
               progress: bool = False, score_start: bool = False) -> EpochsRun:
    """Train ``task`` for at most ``epochs`` epochs, early-stopped after ``patience`` epochs without a better
    :func:`epoch_score`, then restore its best epoch (``task.restore``).

    An epoch whose evaluation is not ``eligible`` is never kept (it counts as one without a better score).
    Each epoch's record (epoch, train_loss, valid_auc, valid_logloss, seconds and the evaluation's extra fields)
    goes to the history and to ``on_epoch`` (rank 0 of ``ctx``; None: one process). With ``score_start`` the
    untrained start is scored first as epoch 0 (train_loss None): a later epoch must beat it to be kept.
    """
    tick = time.perf_counter()
    start = task.evaluate() if score_start else Evaluation(None)
    eval_seconds = time.perf_counter() - tick
    stopping = EarlyStopping(patience, task.snapshot, score=-math.inf if start.auc is None else start.auc, epoch=0,
                             state=task.snapshot(), details=start.details)
    history: list[dict] = []
    if score_start:
        record_epoch(history, {"epoch": 0, "train_loss": None, "valid_auc": start.auc, "valid_logloss": start.logloss,
                               "seconds": round(eval_seconds, 2), **start.extra}, ctx, on_epoch)
    train_seconds: list[float] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        bar = tqdm(total=task.rows, desc=f"{task.label} epoch {epoch}/{epochs}".strip(), unit="sample",
                   disable=not (progress and (ctx is None or ctx.is_main)))
        train_loss, out_of_steps = task.train_epoch(epoch, bar)
        train_seconds.append(time.perf_counter() - started)
        tick = time.perf_counter()
        scored = task.evaluate()
        eval_seconds += time.perf_counter() - tick
        bar.set_postfix(loss=f"{train_loss:.4f}", valid_auc="n/a" if scored.auc is None else f"{scored.auc:.4f}")
        bar.close()
        record = {"epoch": epoch, "train_loss": train_loss, "valid_auc": scored.auc, "valid_logloss": scored.logloss,
                  "seconds": round(time.perf_counter() - started, 2), **scored.extra}
        record_epoch(history, record, ctx, on_epoch)
        what = f"sharing the early-stopping decision of {task.label + ' ' if task.label else ''}epoch {epoch}"
        score = epoch_score(record["valid_auc"], record["train_loss"]) if scored.eligible else -math.inf
        if stopping.update(record["epoch"], score, scored.details, out_of_steps, ctx, what):
            break
    task.restore(stopping.state)
    return EpochsRun(stopping, history, train_seconds, eval_seconds)


# --------------------------------------------------------------------------- setup and the steps of an epoch
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters of ``model`` that train."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def restore_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`trainable_state` back into ``model``."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def global_batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """The global batches of ``epoch`` over ``n`` training rows (the same on every rank of a distributed run)."""
    from unictr_core.fit import distributed

    order = distributed.epoch_permutation(n, seed, epoch)
    for start in range(0, n, batch_size):
        yield order[start: start + batch_size]


class GlobalBatchEpochs:
    """The :class:`EpochTask` part that joint training and the domain add share: epochs of seeded global
    batches (:func:`global_batches`, the same on every rank) until ``config.max_steps`` optimiser steps, the
    trainable parameters of ``model`` as the state kept of the best epoch; ``trained`` (the module that learns)
    is in training mode only during an epoch's steps. A subclass supplies :meth:`step` and ``evaluate()``."""

    label = ""

    def __init__(self, model: torch.nn.Module, trained: torch.nn.Module, config, ctx, rows: int):
        self.model, self.trained, self.config, self.ctx, self.rows = model, trained, config, ctx, rows
        self.steps = 0  # optimiser steps taken, over all epochs

    def step(self, rows: Sequence[int]) -> float:
        """One optimiser step on the global batch ``rows``; returns this rank's part of its loss."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, torch.Tensor]:
        return trainable_state(self.model)

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        restore_state(self.model, state)
        self.trained.eval()

    def train_epoch(self, epoch: int, bar) -> tuple[float, bool]:
        """The steps of ``epoch``; returns the mean global batch loss (each rank holds its parts of the batch
        losses; their sum over the ranks is the global batch loss) and whether the step budget is spent."""
        from unictr_core.fit import distributed

        max_steps = self.config.max_steps
        self.trained.train()
        losses = []
        for rows in global_batches(self.rows, self.config.batch_size, self.config.seed, epoch):
            losses.append(self.step(rows))
            self.steps += 1
            bar.update(len(rows))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]) * self.ctx.world_size:.4f}")
            if max_steps is not None and self.steps >= max_steps:
                break
        self.trained.eval()
        total = distributed.all_reduce_sum(self.ctx, [float(np.sum(losses))], "summing the training loss")[0]
        return total / max(1, len(losses)), max_steps is not None and self.steps >= max_steps
