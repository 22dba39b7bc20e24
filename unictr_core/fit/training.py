"""Joint multi-domain training of Uni-CTR (LoRA + general network + one DSN per domain).

One code path serves one process and many: started under ``torchrun`` (see
:mod:`unictr_core.fit.distributed`), every rank runs :func:`train_unictr` with the
same arguments, the model is wrapped in ``DistributedDataParallel`` and each
rank computes its shard of every global batch. A global batch is the same rows
in the same order as in a single-process run with the same seed, and the loss is
normalised by the global batch (see :func:`unictr_core.fit.loop.shard_loss`), so N processes
make the same optimiser steps as one process (up to float rounding).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


from unictr_core.config import DEFAULT_PRECISION, ModelConfig, TrainConfig
from unictr_core.data.prompts import TemplateSet
from unictr_core.data.schema import Sample
from unictr_core.fit import distributed
from unictr_core.fit.distributed import DistContext
from unictr_core.fit.loop import EarlyStopping, ctr_loss, end_epoch, optimiser_step, shard_loss
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.backbone import load_backbone
from unictr_core.modeling.batching import Batch, EncodedSamples
from unictr_core.modeling.hidden_cache import HiddenStateCache, build_cache
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.predict import (Predictions, domain_metrics, tokenize_samples, mean_auc, mean_domain_metric,
                                          predict_encoded)


@dataclass
class TrainResult:
    model: UniCTRModel
    best_epoch: int
    best_valid_auc: Optional[float]
    valid_metrics: dict
    seconds: float
    history: list[dict] = field(default_factory=list)
    distributed: dict = field(default_factory=dict)  # world size, backend, device of the run
    precision: str = DEFAULT_PRECISION  # the precision the run computed in (auto resolved)
    cache: dict = field(default_factory=dict)  # hidden-state cache below the cut: layers, bytes, seconds
    epoch_seconds: list[float] = field(default_factory=list)  # optimiser steps of each epoch (no validation)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_domains(samples: Sequence[Sample], domains: Optional[Sequence[str]]) -> list[Sample]:
    if domains is None:
        return list(samples)
    wanted = set(domains)
    return [s for s in samples if s.domain in wanted]


def check_labelled(samples: Sequence[Sample], what: str) -> None:
    if not samples:
        raise ValueError(f"{what} has no samples for the chosen domains")
    unlabelled = sum(1 for s in samples if s.label is None)
    if unlabelled:
        raise ValueError(f"{what}: {unlabelled} samples have no label; training needs labels")


def build_model(model_config: ModelConfig, domains: Sequence[str], templates: Optional[TemplateSet] = None,
                seed: int = 0, residual_dsns: bool = False) -> UniCTRModel:
    backbone = load_backbone(model_config.backbone)
    torch.manual_seed(seed)  # LoRA and head initialisation
    return UniCTRModel(backbone, model_config, domains, templates, residual_dsns=residual_dsns)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def restore_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def make_optimizer(model: UniCTRModel, config: TrainConfig, steps_per_epoch: int):
    lora = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("backbone.")]
    groups = [g for g in ({"params": lora, "lr": config.backbone_lr[1]}, {"params": heads, "lr": config.head_lr[1]})
              if g["params"]]
    base = [config.backbone_lr[0] if g["params"] is lora else config.head_lr[0] for g in groups]
    peak = [config.backbone_lr[1] if g["params"] is lora else config.head_lr[1] for g in groups]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=base, max_lr=peak, step_size_up=max(1, steps_per_epoch // 2), mode="triangular",
        cycle_momentum=False,
    )
    return optimizer, scheduler


def train_unictr(train: Sequence[Sample], valid: Sequence[Sample], model_config: ModelConfig,
                 train_config: TrainConfig, templates: Optional[TemplateSet] = None,
                 progress: bool = True, dist_ctx: Optional[DistContext] = None,
                 on_epoch: Optional[Callable[[dict], None]] = None) -> TrainResult:
    """Train jointly on every domain of ``train``; early-stop on the mean per-domain validation AUC.

    ``on_epoch(record)`` is called after every epoch with the record appended to the
    history (epoch, train_loss, valid_auc, valid_logloss: means over the domains, seconds).

    ``dist_ctx``: the process group to train in (default: the one joined by
    :func:`unictr_core.fit.distributed.init_from_env` in this process, else one process).

    With ``model_config.tune_layers`` = K < L, the hidden states below the cut are
    computed once (:func:`unictr_core.modeling.hidden_cache.build_cache`, this rank's shard
    of the training rows and of the validation rows) and every epoch runs only the
    top K layers and the heads. The frozen layers then run without dropout.
    """
    ctx = dist_ctx or distributed.active()
    started = time.perf_counter()
    train_config.validate()
    with distributed.agreement(ctx, "preparing the model and the data"):
        train = select_domains(train, train_config.domains)
        check_labelled(train, "training data")
        domains = sorted({s.domain for s in train})
        valid = [s for s in select_domains(valid, domains)]
        check_labelled(valid, "validation data")
        seed_everything(train_config.seed)
        model = build_model(model_config, domains, templates, seed=train_config.seed,
                            residual_dsns=train_config.dsn == "residual").to(ctx.device)
        train_set = tokenize_samples(model, train)
        valid_rows = distributed.eval_shard(len(valid), ctx)
        valid_set = tokenize_samples(model, [valid[i] for i in valid_rows])
        precision = precisions.resolve(train_config.precision, ctx.device, training=True)
    train_cache, valid_cache, cache_info = cache_below_cut(model, train_set, valid_set, train_config, precision,
                                                           progress and ctx.is_main, ctx)
    # unused parameters are expected: a rank whose shard lacks a domain does not run that domain's DSN; a DSN
    # that no rank used keeps grad None, so the optimiser skips it, as in one process
    net = distributed.data_parallel(model, ctx, find_unused_parameters=True, forward_sync_buffers=False)
    batch_size = train_config.batch_size
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    optimizer, scheduler = make_optimizer(model, train_config, steps_per_epoch)

    stopping = EarlyStopping(train_config.patience, lambda: trainable_state(model), state=trainable_state(model),
                             details={})
    history: list[dict] = []
    steps = 0
    epoch_seconds: list[float] = []
    for epoch in range(1, train_config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        bar = tqdm(total=len(train_set), desc=f"epoch {epoch}/{train_config.epochs}", unit="sample",
                   disable=not (progress and ctx.is_main), leave=True)
        losses = []
        order = distributed.epoch_permutation(len(train_set), train_config.seed, epoch)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            with distributed.collective(ctx, f"training step {steps + 1}"):
                losses.append(global_batch_step(net, model, train_set, rows, optimizer, scheduler,
                                                train_config.max_grad_norm, ctx, train_cache, precision))
            steps += 1
            bar.update(len(rows))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]) * ctx.world_size:.4f}")
            if train_config.max_steps is not None and steps >= train_config.max_steps:
                break
        # each rank holds its parts of the batch losses; their sum over ranks is the global batch loss
        train_loss = distributed.all_reduce_sum(ctx, [float(np.sum(losses))], "summing the training loss")[0]
        train_loss /= max(1, len(losses))
        epoch_seconds.append(time.perf_counter() - epoch_started)
        predictions = gathered_predictions(model, valid_set, valid_rows, len(valid), train_config.eval_batch_size,
                                           ctx, precision, valid_cache)
        per_domain = domain_metrics(valid, predictions)
        valid_auc = mean_auc(per_domain)
        bar.set_postfix(loss=f"{train_loss:.4f}", valid_auc=f"{valid_auc:.4f}" if valid_auc else "n/a")
        bar.close()
        record = {"epoch": epoch, "train_loss": train_loss, "valid_auc": valid_auc,
                  "valid_logloss": mean_domain_metric(per_domain, "logloss"),
                  "seconds": round(time.perf_counter() - epoch_started, 2), "valid": per_domain}
        out_of_steps = train_config.max_steps is not None and steps >= train_config.max_steps
        if end_epoch(stopping, history, record, per_domain, out_of_steps, ctx, on_epoch,
                     f"sharing the early-stopping decision of epoch {epoch}"):
            break
    restore_state(model, stopping.state)
    model.eval()
    best_auc = stopping.score if stopping.details and mean_auc(stopping.details) is not None else None
    return TrainResult(model=model, best_epoch=stopping.epoch, best_valid_auc=best_auc, valid_metrics=stopping.details,
                       seconds=time.perf_counter() - started, history=history, distributed=ctx.describe(),
                       precision=precision, cache=cache_info, epoch_seconds=epoch_seconds)


def cache_below_cut(model: UniCTRModel, train_set: EncodedSamples, valid_set: EncodedSamples, config: TrainConfig,
                    precision: str, progress: bool, ctx: DistContext
                    ) -> tuple[Optional[HiddenStateCache], Optional[HiddenStateCache], dict]:
    """The frozen hidden states of this rank's training and validation rows, or ``(None, None, {})``
    when every layer is tuned. Training rows first: they get the RAM budget before the validation rows."""
    if model.cut == 0:
        return None, None, {}
    started = time.perf_counter()
    layers = model.cached_layers()
    owned = distributed.owned_rows(len(train_set), ctx) if ctx.is_distributed else None
    train_cache = build_cache(model, train_set, layers, owned, config.eval_batch_size, precision, config.cache_dtype,
                              max_gb=config.max_cache_gb, cache_dir=config.cache_dir, progress=progress,
                              desc="hidden states below the cut (train)", head_inputs=model.caches_head_inputs,
                              reuse=config.reuse_states)
    left = max(0.0, config.max_cache_gb - train_cache.ram_bytes / 2**30)
    valid_cache = build_cache(model, valid_set, layers, None, config.eval_batch_size, precision, config.cache_dtype,
                              max_gb=left,
                              cache_dir=config.cache_dir, progress=progress, desc="hidden states below the cut (valid)",
                              head_inputs=model.caches_head_inputs, reuse=config.reuse_states)
    rows = len(train_cache) + len(valid_cache)
    info = {"layers": layers, "storage": train_cache.storage, "rows": rows,
            "bytes": train_cache.nbytes + valid_cache.nbytes,
            "disk_bytes": train_cache.disk_bytes + valid_cache.disk_bytes,
            "seconds": time.perf_counter() - started}
    return train_cache, valid_cache, info


def global_batch_step(net: torch.nn.Module, model: UniCTRModel, encoded: EncodedSamples, rows: Sequence[int],
                      optimizer, scheduler, max_grad_norm: float, ctx: DistContext,
                      cache: Optional[HiddenStateCache] = None, precision: str = DEFAULT_PRECISION) -> float:
    """One optimiser step on the global batch ``rows``; this rank computes its shard. Returns its loss part.

    With ``cache`` (this rank's rows below the cut) the rank computes the rows of the batch it owns.
    """
    if cache is None:
        mine, padding = distributed.shard_of_global_batch(rows, ctx)
    else:  # padding: a row of this rank's own of the batch's first domain (no other DSN may take a step)
        domain = encoded.samples[rows[0]].domain
        pad = next((r for r in range(ctx.rank, len(encoded), ctx.world_size)
                    if encoded.samples[r].domain == domain), None)
        mine, padding = distributed.owned_part_of_global_batch(rows, ctx, pad)
    batch = encoded.batch(mine).to(ctx.device)
    hidden, mask = (None, batch.attention_mask) if cache is None else cache.batch(mine)
    weights = torch.full((len(mine),), 0.0 if padding else 1.0, device=ctx.device)
    dsn_rows = sum(1 for r in rows if encoded.samples[r].domain in model.dsns)
    with precisions.autocast(precision, ctx.device):
        output = net(batch.input_ids, mask, batch.domains, batch.ids, hidden_states=hidden)
    part = shard_loss(output.float(), batch.labels, weights, len(rows), dsn_rows)
    # DistributedDataParallel averages the gradients over the ranks; scaling by the world size makes the
    # result the gradient of the sum of the parts, i.e. of the global batch loss
    optimiser_step(part * ctx.world_size, [p for p in model.parameters() if p.requires_grad], optimizer, scheduler,
                   max_grad_norm)
    return float(part.detach())


def train_step(model: UniCTRModel, batch, optimizer, scheduler, max_grad_norm: float) -> float:
    """One single-process optimiser step on ``batch`` with :func:`ctr_loss`."""
    loss = ctr_loss(model(batch.input_ids, batch.attention_mask, batch.domains, batch.ids), batch.labels)
    optimiser_step(loss, [p for p in model.parameters() if p.requires_grad], optimizer, scheduler, max_grad_norm)
    return float(loss.detach())


@torch.no_grad()
def gathered_predictions(model: UniCTRModel, shard: EncodedSamples, shard_rows: Sequence[int], total: int,
                         batch_size: int, ctx: DistContext, precision: str = DEFAULT_PRECISION,
                         cache: Optional[HiddenStateCache] = None) -> Predictions:
    """Predictions for a whole evaluation set whose rows ``shard_rows`` this rank holds (encoded in ``shard``)."""
    local = predict_encoded(model, shard, batch_size, precision=precision, cache=cache)
    values = np.column_stack([local.probs, local.general_probs, local.zero_shot.astype(np.float64)])
    full = distributed.gather_rows(ctx, shard_rows, values, total, "gathering the validation predictions")
    return Predictions(probs=full[:, 0].copy(), general_probs=full[:, 1].copy(), zero_shot=full[:, 2] > 0.5)
