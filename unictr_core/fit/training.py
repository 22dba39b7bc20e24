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
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from unictr_core.config import AUTO_ID_FIELDS, DEFAULT_PRECISION, ModelConfig, TrainConfig, check_id_lr_scale
from unictr_core.data.prompts import TemplateSet
from unictr_core.data.schema import Sample
from unictr_core.fit import distributed
from unictr_core.fit.distributed import DistContext
from unictr_core.fit.loop import (Evaluation, GlobalBatchEpochs, cosine_decay, ctr_loss, optimiser_step, run_epochs,
                                  seed_everything, shard_loss)
from unictr_core.fit.shrinkage import fit_shrinkage, logit
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.backbone import load_backbone
from unictr_core.modeling.batching import Batch, EncodedSamples
from unictr_core.modeling.hidden_cache import HiddenStateCache, build_cache
from unictr_core.modeling.ids import detected_id_fields, id_table_parameters
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.networks import DsnSpec
from unictr_core.modeling.stats import COUNTS, causal_counts
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
    # per residual DSN: its shrinkage chosen on validation (unictr_core.fit.shrinkage.Shrinkage.to_dict); empty
    # with TrainConfig.dsn_shrinkage False. valid_metrics and best_valid_auc are those of the shrunk DSNs
    shrinkage: dict[str, dict] = field(default_factory=dict)


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


def make_optimizer(model: UniCTRModel, config: TrainConfig, steps_per_epoch: int):
    """AdamW over LoRA (``config.backbone_lr``) and the heads (``config.head_lr``; their ID embedding tables at
    ``config.id_lr_scale`` times it), each a (base, peak) range, and the scheduler of ``config.lr_schedule``:
    "cyclic", the paper's triangular cycle from base to peak and back in every epoch; "cosine", from the peak
    down a half cosine to the base at the last epoch (or ``max_steps``)."""
    lora = [p for p in model.backbone.parameters() if p.requires_grad]
    scale = config.id_lr_scale
    ids = id_table_parameters(model) if scale != 1.0 else []
    id_keys = {id(p) for p in ids}
    heads = [p for name, p in model.named_parameters()
             if p.requires_grad and not name.startswith("backbone.") and id(p) not in id_keys]
    ranges = [(params, lr) for params, lr in ((lora, config.backbone_lr), (heads, config.head_lr),
                                              (ids, (config.head_lr[0] * scale, config.head_lr[1] * scale)))
              if params]
    groups = [{"params": params, "lr": lr[1]} for params, lr in ranges]
    base = [lr[0] for _, lr in ranges]
    peak = [lr[1] for _, lr in ranges]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        total = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        return optimizer, cosine_decay(optimizer, [b / p if p > 0 else 0.0 for b, p in zip(base, peak)], total)
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
    check_id_lr_scale(model_config, train_config)
    with distributed.agreement(ctx, "preparing the model and the data"):
        model, train_set, valid_set, valid, precision = _prepare(train, valid, model_config, train_config, templates,
                                                                 ctx)
        train_counts = fit_count_statistics(model, train_set.samples) if train_config.dsn_stats else None
    train_cache, valid_cache, cache_info = cache_below_cut(model, train_set, valid_set, train_config, precision,
                                                           progress and ctx.is_main, ctx)
    task = _JointEpochs(model, (train_set, train_cache, train_counts), (valid, valid_set, valid_cache), train_config,
                        ctx, precision)
    run = run_epochs(task, train_config.epochs, train_config.patience, ctx, on_epoch, progress)
    best = run.stopping
    best_auc = best.score if best.details and mean_auc(best.details) is not None else None
    valid_metrics, shrinkage = best.details or {}, {}
    if train_config.dsn_shrinkage and any(dsn.residual for dsn in model.dsns.values()):
        shrinkage, valid_metrics = task.shrink_dsns()
        best_auc = mean_auc(valid_metrics)
    return TrainResult(model=model, best_epoch=best.epoch, best_valid_auc=best_auc, valid_metrics=valid_metrics,
                       seconds=time.perf_counter() - started, history=run.history, distributed=ctx.describe(),
                       precision=precision, cache=cache_info, epoch_seconds=run.train_seconds, shrinkage=shrinkage)


def _prepare(train: Sequence[Sample], valid: Sequence[Sample], model_config: ModelConfig, config: TrainConfig,
             templates: Optional[TemplateSet], ctx: DistContext):
    """The chosen domains' rows checked, the seeded model, the encoded training rows and this rank's shard of the
    validation rows; returns (model, train_set, valid_set, valid, precision)."""
    train = select_domains(train, config.domains)
    check_labelled(train, "training data")
    domains = sorted({s.domain for s in train})
    valid = [s for s in select_domains(valid, domains)]
    check_labelled(valid, "validation data")
    if model_config.id_fields == [AUTO_ID_FIELDS]:
        model_config = replace(model_config, id_fields=detected_id_fields(train))
        model_config.validate()
    seed_everything(config.seed)
    model = build_model(model_config, domains, templates, seed=config.seed,
                        residual_dsns=DsnSpec(residual=config.dsn == "residual", stats=config.dsn_stats)
                        ).to(ctx.device)
    train_set = tokenize_samples(model, train)
    valid_set = tokenize_samples(model, [valid[i] for i in distributed.eval_shard(len(valid), ctx)])
    precision = precisions.resolve(config.precision, ctx.device, training=True)
    return model, train_set, valid_set, valid, precision


def fit_count_statistics(model: UniCTRModel, samples: Sequence[Sample]) -> torch.Tensor:
    """Fill every DSN's count tables with its domain's training rows (what it reads at prediction time) and
    return the rows' causal counts [N, 6] (what each row reads in training: only the earlier rows of its
    domain; :func:`unictr_core.modeling.stats.causal_counts`)."""
    counts = np.zeros((len(samples), COUNTS))
    for domain, dsn in model.dsns.items():
        rows = [i for i, s in enumerate(samples) if s.domain == domain]
        if dsn.counts is None or not rows:
            continue
        part = [samples[i] for i in rows]
        dsn.counts.fit(part)
        counts[rows] = causal_counts(part, model.config.id_buckets)
    return torch.from_numpy(counts).float().to(next(model.parameters()).device)


class _JointEpochs(GlobalBatchEpochs):
    """Joint training's part of :func:`unictr_core.fit.loop.run_epochs`: global batch steps of the whole model
    over every domain, scored by the mean per-domain validation AUC."""

    def __init__(self, model: UniCTRModel, train: tuple, valid: tuple, config: TrainConfig, ctx: DistContext,
                 precision: str):
        # encoded rows, their hidden states below the cut (or None), their causal count statistics (or None)
        self.train_set, self.train_cache, self.train_counts = train
        self.valid, self.valid_set, self.valid_cache = valid  # all rows, this rank's shard encoded, its cache
        super().__init__(model, model, config, ctx, len(self.train_set))
        self.precision = precision
        self.valid_rows = distributed.eval_shard(len(self.valid), ctx)
        # unused parameters are expected: a rank whose shard lacks a domain does not run that domain's DSN; a DSN
        # that no rank used keeps grad None, so the optimiser skips it, as in one process
        self.net = distributed.data_parallel(model, ctx, find_unused_parameters=True, forward_sync_buffers=False)
        self.optimizer, self.scheduler = make_optimizer(model, config, math.ceil(self.rows / config.batch_size))

    def step(self, rows: Sequence[int]) -> float:
        with distributed.collective(self.ctx, f"training step {self.steps + 1}"):
            return self.global_batch_step(rows)

    def global_batch_step(self, rows: Sequence[int]) -> float:
        """One optimiser step on the global batch ``rows``; this rank computes its shard. Returns its loss part.

        With a cache (this rank's rows below the cut) the rank computes the rows of the batch it owns.
        """
        model, encoded, cache, ctx = self.model, self.train_set, self.train_cache, self.ctx
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
        with precisions.autocast(self.precision, ctx.device):
            counts = None if self.train_counts is None else self.train_counts[mine]
            output = self.net(batch.input_ids, mask, batch.domains, batch.ids, hidden_states=hidden, counts=counts)
        part = shard_loss(output.float(), batch.labels, weights, len(rows), dsn_rows)
        # DistributedDataParallel averages the gradients over the ranks; scaling by the world size makes the
        # result the gradient of the sum of the parts, i.e. of the global batch loss
        optimiser_step(part * ctx.world_size, [p for p in model.parameters() if p.requires_grad], self.optimizer,
                       self.scheduler, self.config.max_grad_norm)
        return float(part.detach())

    def evaluate(self) -> Evaluation:
        predictions = gathered_predictions(self.model, self.valid_set, self.valid_rows, len(self.valid),
                                           self.config.eval_batch_size, self.ctx, self.precision, self.valid_cache)
        per_domain = domain_metrics(self.valid, predictions)
        return Evaluation(mean_auc(per_domain), mean_domain_metric(per_domain, "logloss"), details=per_domain,
                          extra={"valid": per_domain})

    def shrink_dsns(self) -> tuple[dict[str, dict], dict[str, dict]]:
        """Choose each residual DSN's shrinkage on its domain's validation rows and fold it into the DSN
        (:mod:`unictr_core.fit.shrinkage`); every rank computes the same from the gathered predictions. Returns
        the shrinkage per domain and the validation metrics of the shrunk DSNs (from the same predictions:
        one pass over the validation rows), each domain's with its ``dsn_shrinkage``."""
        predictions = gathered_predictions(self.model, self.valid_set, self.valid_rows, len(self.valid),
                                           self.config.eval_batch_size, self.ctx, self.precision, self.valid_cache)
        domains = np.asarray([s.domain for s in self.valid])
        labels = np.asarray([s.label for s in self.valid])
        general, dsn_logits = logit(predictions.general_probs), logit(predictions.probs)
        probs = predictions.probs.copy()
        chosen = {}
        for domain, dsn in self.model.dsns.items():
            rows = domains == domain
            if not dsn.residual or not rows.any():
                continue
            fitted = fit_shrinkage(general[rows], dsn_logits[rows], labels[rows])
            dsn.scale_correction(fitted.scale)
            chosen[domain] = fitted.to_dict()
            if fitted.scale != 1.0:
                probs[rows] = 1.0 / (1.0 + np.exp(-fitted.apply(general[rows], dsn_logits[rows])))
        per_domain = domain_metrics(self.valid, replace(predictions, probs=probs))
        for domain, fitted in chosen.items():
            per_domain[domain]["dsn_shrinkage"] = fitted["scale"]
        return chosen, per_domain


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
    fill = precisions.resolve_fill(config.fill_precision, precision, ctx.device)
    settings = replace(config, precision=fill)  # resolved: the backbone's forward over the cached rows
    train_cache = build_cache(model, train_set, layers, owned, settings, progress,
                              "hidden states below the cut (train)", head_inputs=model.caches_head_inputs)
    left = max(0.0, config.max_cache_gb - train_cache.ram_bytes / 2**30)
    valid_cache = build_cache(model, valid_set, layers, None, replace(settings, max_cache_gb=left), progress,
                              "hidden states below the cut (valid)", head_inputs=model.caches_head_inputs)
    rows = len(train_cache) + len(valid_cache)
    info = {"layers": layers, "precision": fill, "storage": train_cache.storage, "rows": rows,
            "bytes": train_cache.nbytes + valid_cache.nbytes,
            "disk_bytes": train_cache.disk_bytes + valid_cache.disk_bytes,
            "seconds": time.perf_counter() - started}
    return train_cache, valid_cache, info


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
