"""Joint multi-domain training of Uni-CTR (LoRA + general network + one DSN per domain)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unictr_core.backbone import load_backbone
from unictr_core.batching import EncodedSamples
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.model import UniCTRModel, ctr_loss
from unictr_core.predict import domain_metrics, encode, mean_auc, predict_encoded
from unictr_core.prompts import TemplateSet
from unictr_core.schema import Sample


@dataclass
class TrainResult:
    model: UniCTRModel
    best_epoch: int
    best_valid_auc: Optional[float]
    valid_metrics: dict
    seconds: float
    history: list[dict] = field(default_factory=list)


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
                seed: int = 0) -> UniCTRModel:
    backbone = load_backbone(model_config.backbone)
    torch.manual_seed(seed)  # LoRA and head initialisation
    return UniCTRModel(backbone, model_config, domains, templates)


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
                 progress: bool = True) -> TrainResult:
    """Train jointly on every domain of ``train``; early-stop on the mean per-domain validation AUC."""
    started = time.perf_counter()
    train = select_domains(train, train_config.domains)
    check_labelled(train, "training data")
    domains = sorted({s.domain for s in train})
    valid = [s for s in select_domains(valid, domains)]
    check_labelled(valid, "validation data")
    seed_everything(train_config.seed)
    model = build_model(model_config, domains, templates, seed=train_config.seed)
    train_set = encode(model, train)
    valid_set = encode(model, valid)
    steps_per_epoch = math.ceil(len(train_set) / train_config.batch_size)
    optimizer, scheduler = make_optimizer(model, train_config, steps_per_epoch)
    generator = torch.Generator().manual_seed(train_config.seed)

    best = (-math.inf, 0, trainable_state(model), {})
    history: list[dict] = []
    stale = 0
    steps = 0
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        bar = tqdm(total=len(train_set), desc=f"epoch {epoch}/{train_config.epochs}", unit="sample",
                   disable=not progress, leave=True)
        losses = []
        for batch in train_set.shuffled_batches(train_config.batch_size, generator):
            loss = train_step(model, batch, optimizer, scheduler, train_config.max_grad_norm)
            losses.append(loss)
            steps += 1
            bar.update(len(batch.rows))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if train_config.max_steps is not None and steps >= train_config.max_steps:
                break
        per_domain = domain_metrics(valid, predict_encoded(model, valid_set, train_config.eval_batch_size))
        valid_auc = mean_auc(per_domain)
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", valid_auc=f"{valid_auc:.4f}" if valid_auc else "n/a")
        bar.close()
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_auc": valid_auc,
                        "valid": per_domain})
        score = valid_auc if valid_auc is not None else -float(np.mean(losses))
        if score > best[0]:
            best = (score, epoch, trainable_state(model), per_domain)
            stale = 0
        else:
            stale += 1
        if stale >= train_config.patience or (train_config.max_steps is not None and steps >= train_config.max_steps):
            break
    restore_state(model, best[2])
    model.eval()
    best_auc = best[0] if best[3] and mean_auc(best[3]) is not None else None
    return TrainResult(model=model, best_epoch=best[1], best_valid_auc=best_auc, valid_metrics=best[3],
                       seconds=time.perf_counter() - started, history=history)


def train_step(model: UniCTRModel, batch, optimizer, scheduler, max_grad_norm: float) -> float:
    output = model(batch.input_ids, batch.attention_mask, batch.domains)
    loss = ctr_loss(output, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())
