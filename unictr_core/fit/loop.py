"""The one training skeleton of UniCTR, the domain add and the baselines: loss, optimiser step, early stopping.

* :func:`bce` - the one loss: binary cross-entropy of click logits, a mean over the rows, or a weighted sum over
  a shard's rows divided by the global batch's count (the shards' parts then add up to the global mean);
  :func:`ctr_loss` (Uni-CTR's: general network + each row's DSN) and :func:`shard_loss` (a rank's part of it) are
  built from it.
* :func:`optimiser_step` - zero the gradients, backward, clip, step the optimiser and the learning-rate schedule.
* :func:`epoch_score` - the one rule for choosing epochs: the validation AUC; where it is undefined (one label
  class in the validation rows) minus the training loss, so a run still keeps its best (lowest-loss) epoch.
* :class:`EarlyStopping` - the best epoch, its state and its details; stops after ``patience`` epochs without a
  better score. In a distributed run rank 0's decision is broadcast, so every rank leaves the loop together.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Iterable, Optional

import torch
import torch.nn.functional as F


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


def end_epoch(stopping: EarlyStopping, history: list, record: dict, details: Any, out_of_steps: bool, ctx,
              on_epoch: Optional[Callable[[dict], None]], what: str) -> bool:
    """The end of every epoch: append ``record`` (epoch, train_loss, valid_auc, ...) to ``history``, hand it to
    ``on_epoch`` (on rank 0), and score it for early stopping (:func:`epoch_score`); True when training stops."""
    history.append(record)
    if on_epoch is not None and ctx.is_main:
        on_epoch(record)
    return stopping.update(record["epoch"], epoch_score(record["valid_auc"], record["train_loss"]), details,
                           out_of_steps, ctx, what)
