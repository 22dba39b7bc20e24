"""Every setting and its default, one source of truth for the library and the CLI: model, training, baselines."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

LADDER_KINDS = ("none", "mlp", "attention", "transformer")
DSN_KINDS = ("residual", "standalone")
# joint training's learning-rate schedule (unictr_core.fit.training.make_optimizer): "cyclic" is the paper's
# triangular cycle from the base to the peak rate and back in every epoch; "cosine" starts at the peak and decays
# along a cosine to the base rate at the last epoch (as `domain add` trains a DSN)
LR_SCHEDULES = ("cyclic", "cosine")
ID_MODES = ("none", "dsn", "all")   # no IDs (the paper's text-only model); IDs in the DSNs only; DSNs + general
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")  # of `unictr serve`
PRECISIONS = ("auto", "fp32", "bf16")  # see unictr_core.modeling.precision
# the one precision default of training, domain add, predict, evaluate, serve and the benchmarks
DEFAULT_PRECISION = "fp32"
# the frozen backbone's forward over the rows it caches (TrainConfig.fill_precision): "same" as the training
# precision (resolved), else one of PRECISIONS resolved as for prediction (auto: bf16 where the device has it)
FILL_PRECISIONS = ("same",) + PRECISIONS
QUANTIZE = ("none", "int8")
DIST_TIMEOUT_ENV = "UNICTR_DIST_TIMEOUT"  # seconds a process waits in a collective (see unictr_core.fit.distributed)
DEFAULT_DIST_TIMEOUT_S = 600.0
MAX_ID_HISTORY = 64  # ModelConfig.id_history: at most this many history items
MAX_ID_FIELDS = 32  # ModelConfig.id_fields: at most this many fields
AUTO_ID_FIELDS = "auto"  # ModelConfig.id_fields = [AUTO_ID_FIELDS]: detected on the training split
MAX_ID_LR_SCALE = 100.0  # TrainConfig.id_lr_scale: at most this many times the heads' learning rate
NOT_ID_FIELDS = ("user_id", "item_id", "domain", "title", "label", "timestamp")  # embedded already, or not IDs
MAX_TOKEN_SUMMARY = 64  # ModelConfig.token_summary: at most this many vectors per layer
DEFAULT_MAX_CACHE_GB = 4.0  # hidden-state cache kept in RAM before the rest goes to a memory-mapped file


@dataclass
class ModelConfig:
    """Every architecture hyperparameter of the core and of a DSN (stored in the core manifest)."""

    backbone: str = "minilm"
    max_length: int = 128
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: Optional[list[str]] = None  # None: chosen per architecture
    ladder_kind: str = "transformer"
    ladder_freq: Optional[int] = None  # None: about 4 ladder blocks (round(num_layers / 4))
    narrowed_ratio: float = 0.25
    ladder_heads: int = 2
    tower_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    dropout: float = 0.1  # the paper uses 0.3 on millions of rows; 0.1 learns faster on small data
    # ID-aware Uni-CTR (unictr_core.modeling.ids): "none" = the paper's text-only model; "dsn" = each DSN also reads
    # hashed embeddings of user, item and categorical fields (its own tables, in its bundle); "all" = the
    # general network too (its tables are part of the frozen core)
    ids: str = "none"
    id_buckets: int = 16384
    id_dim: int = 16
    # the ID embeddings also read the user's last K history items (hashed titles, mean-pooled, as the ID
    # baselines' history slot); 0: none (the layout of cores trained before this setting existed)
    id_history: int = 0
    # the categorical fields beside user and item: [] = one bag (brand and every short extra field, mean-pooled
    # into one vector); names = one embedding per field in this order (as the ID baselines); ["auto"] = the
    # categorical fields of the training split, detected when training starts and stored by name in the core
    id_fields: list[str] = field(default_factory=list)
    tune_layers: Optional[int] = None  # LoRA in the top K layers only (0: frozen backbone); None: every layer
    # the heads read each layer's tokens summarised into K vectors (mean + K-1 part means,
    # unictr_core.modeling.summary): a cache that grows with rows, not rows x tokens; 0: every token (the paper)
    token_summary: int = 0

    def validate(self) -> None:
        if self.ladder_kind not in LADDER_KINDS:
            raise ValueError(f"ladder_kind must be one of {', '.join(LADDER_KINDS)}, got '{self.ladder_kind}'")
        if self.ladder_freq is not None and self.ladder_freq < 1:
            raise ValueError(f"ladder_freq must be >= 1, got {self.ladder_freq}")
        if not 0 < self.narrowed_ratio <= 1:
            raise ValueError(f"narrowed_ratio must be in (0, 1], got {self.narrowed_ratio}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.ids not in ID_MODES:
            raise ValueError(f"ids must be one of {', '.join(ID_MODES)}, got '{self.ids}'")
        if self.id_buckets < 2 or self.id_dim < 1:
            raise ValueError(f"id_buckets must be >= 2 and id_dim >= 1, got {self.id_buckets} and {self.id_dim}")
        if not 0 <= self.id_history <= MAX_ID_HISTORY:
            raise ValueError(f"id_history must be 0 (none) to {MAX_ID_HISTORY} history items, got {self.id_history}")
        if self.id_history and self.ids == "none":
            raise ValueError(f"id_history {self.id_history} feeds the ID embeddings: it needs ids dsn or all, got "
                             f"ids none")
        self._validate_id_fields()
        if not 0 <= self.token_summary <= MAX_TOKEN_SUMMARY:
            raise ValueError(f"token_summary must be 0 (every token) or 1..{MAX_TOKEN_SUMMARY} vectors per layer, "
                             f"got {self.token_summary}")
        if self.tune_layers is not None and self.tune_layers < 0:
            raise ValueError(f"tune_layers must be >= 0 (or None for every layer), got {self.tune_layers}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lora_r < 1 or self.ladder_heads < 1 or min(self.tower_dims, default=1) < 1:
            raise ValueError(f"lora_r and ladder_heads must be >= 1 and tower_dims sizes >= 1, "
                             f"got {self.lora_r}, {self.ladder_heads} and {self.tower_dims}")

    def _validate_id_fields(self) -> None:
        names = self.id_fields
        if not names:
            return
        if self.ids == "none":
            raise ValueError(f"id_fields {names} feed the ID embeddings: they need ids dsn or all, got ids none")
        if AUTO_ID_FIELDS in names and len(names) > 1:
            raise ValueError(f"id_fields: '{AUTO_ID_FIELDS}' stands alone (detect the fields), got {names}")
        if len(names) > MAX_ID_FIELDS:
            raise ValueError(f"id_fields: at most {MAX_ID_FIELDS} fields, got {len(names)}")
        for name in names:
            if not name or name != name.strip() or name in NOT_ID_FIELDS:
                raise ValueError(f"id_fields: '{name}' is not a categorical field name (not empty, no surrounding "
                                 f"spaces, none of {', '.join(NOT_ID_FIELDS)})")
        if len(set(names)) < len(names):
            raise ValueError(f"id_fields: a field is named twice in {names}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """The config in ``data`` (a manifest's ``architecture``); ValueError naming the first setting that is
        unknown, of the wrong type or out of range."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of model settings, got {type(data).__name__}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(sorted(map(str, unknown)))}")
        for name, value in data.items():
            if not _has_type(value, known[name]):
                raise ValueError(f"model setting '{name}': expected {known[name]}, got {_short(value)}")
        config = cls(**data)
        config.validate()
        return config


def _has_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotation of the form ``[Optional[]](str|int|float|list[str]|list[int])``."""
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return value is None or _has_type(value, annotation[len("Optional["):-1])
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(_has_type(v, annotation[len("list["):-1]) for v in value)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation == "str":
        return isinstance(value, str)
    if annotation == "bool":
        return isinstance(value, bool)
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    backbone_lr: tuple[float, float] = (1e-6, 2e-4)  # cyclic LR range for LoRA (paper: 1e-6..8e-5, far more data)
    head_lr: tuple[float, float] = (1e-5, 2e-3)  # cyclic LR range for the general network and DSNs
    weight_decay: float = 0.01
    patience: int = 2  # epochs without a better validation AUC before stopping
    max_grad_norm: float = 1.0
    seed: int = 0
    domains: Optional[list[str]] = None  # None: every domain in the training data
    max_steps: Optional[int] = None  # stop after this many optimiser steps (smoke runs)
    precision: str = DEFAULT_PRECISION  # fp32 | bf16 | auto (see unictr_core.modeling.precision)
    # the frozen backbone's forward when it fills the hidden-state cache: one of FILL_PRECISIONS; it is
    # inference, so auto is bf16 where native (AMX/AVX512-BF16, CUDA) even when the heads train in fp32
    fill_precision: str = "same"
    max_cache_gb: float = DEFAULT_MAX_CACHE_GB  # hidden-state cache in RAM (tune_layers); beyond it: a mapped file
    # where the memory-mapped part goes; None: the home in `unictr train` / `domain add` (unictr_core.workflows
    # resolves it), the system's temp folder when train_unictr or train_domain is called directly
    cache_dir: Optional[str] = None
    cache_dtype: str = "auto"  # cached hidden states: auto (fp16; bf16 for decoders, bf16 runs), fp16, bf16, fp32
    # keep a frozen backbone's token summaries (ModelConfig.token_summary) under <cache>/states and reuse them in
    # later runs over the same prompts (unictr_core.modeling.hidden_cache: keyed by weights, settings and tokens)
    reuse_states: bool = True

    # "residual": each DSN's logit = the general network's (detached) + a learned correction that starts at
    # zero (as `domain add`); "standalone": the paper's DSN, a prediction of its own from scratch
    dsn: str = "residual"   # chosen by measurement (docs/results.md, "Residual DSNs in joint training")
    # each DSN also reads its domain's count statistics (unictr_core.modeling.stats: the user's and item's past
    # positive rate and count, causal in training, the training part's at prediction), as `domain add` does
    dsn_stats: bool = False
    lr_schedule: str = "cyclic"  # one of LR_SCHEDULES (joint training; `domain add` always decays a cosine)
    # the ID embedding tables (ModelConfig.ids) learn at this many times the heads' rate (base and peak): sparse
    # rows see few updates each; 1.0 keeps one rate for all the heads (docs/results.md, "Every baseline ...")
    id_lr_scale: float = 1.0
    # after joint training and domain add, scale each residual DSN's correction by the s in [0, 1] with the lowest
    # logloss on its domain's validation rows (unictr_core.fit.shrinkage; 0: the general network alone); False keeps
    # the DSNs as trained
    dsn_shrinkage: bool = True

    def validate(self) -> None:
        if self.dsn not in DSN_KINDS:
            raise ValueError(f"dsn must be one of {', '.join(DSN_KINDS)}, got '{self.dsn}'")
        if self.fill_precision not in FILL_PRECISIONS:
            raise ValueError(f"fill_precision must be one of {', '.join(FILL_PRECISIONS)}, "
                             f"got '{self.fill_precision}'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        if not 0 < self.id_lr_scale <= MAX_ID_LR_SCALE:
            raise ValueError(f"id_lr_scale must be in (0, {MAX_ID_LR_SCALE:g}], got {self.id_lr_scale}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselineSettings:
    """Training settings of the baselines (unictr_core.baselines), one for all of them."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    seed: int = 0
    embed_dim: int = 16
    hidden: tuple = (128, 64)
    dropout: float = 0.1
    max_history: int = 5
    model_options: dict = field(default_factory=dict)

    def model_kwargs(self) -> dict:
        return {"embed_dim": self.embed_dim, "hidden": tuple(self.hidden), "dropout": self.dropout,
                **self.model_options}



@dataclass
class ServeSettings:
    """Settings of `unictr serve` (unictr_core.serving)."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 1 << 20
    max_request_rows: int = 256  # samples in one request
    request_timeout_s: float = 30.0
    poll_interval_s: float = 0.5
    api_key: Optional[str] = None
    threads: Optional[int] = None
    log_level: str = "info"
    precision: str = DEFAULT_PRECISION  # as `unictr predict` (see unictr_core.modeling.fast_path)
    quantize: str = "none"

    def validate(self) -> None:
        checks = [(self.max_batch_size >= 1, "--max-batch-size must be at least 1"),
                  (self.max_wait_ms >= 0, "--max-wait-ms must be 0 or more"),
                  (self.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
                  (self.max_request_rows >= 1, "--max-request-rows must be at least 1"),
                  (self.request_timeout_s > 0, "--request-timeout must be more than 0 s"),
                  (self.poll_interval_s > 0, "--poll-interval must be more than 0 s"),
                  (0 <= self.port <= 65535, "--port must be between 0 and 65535"),
                  (self.api_key is None or self.api_key.strip() != "", "the API key must not be empty"),
                  (self.log_level in LOG_LEVELS, f"--log-level must be one of {', '.join(LOG_LEVELS)}"),
                  (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
                  (self.quantize in QUANTIZE, f"--quantize must be one of {', '.join(QUANTIZE)}"),
                  (not (self.quantize == "int8" and self.precision == "bf16"),
                   "--quantize int8 computes in int8/fp32; it cannot be combined with --precision bf16")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def check_id_lr_scale(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Refuse an ID learning-rate scale for a model without ID tables (it would silently do nothing)."""
    if train_config.id_lr_scale != 1.0 and model_config.ids == "none":
        raise ValueError(f"id_lr_scale {train_config.id_lr_scale:g} sets the ID tables' learning rate: it needs "
                         f"ids dsn or all, got ids none")


def joint_head_lr(peak: float) -> tuple[float, float]:
    """Joint training's head learning-rate range with peak ``peak`` (`unictr train --head-lr`): the default base
    rate, or ``peak`` itself when it is lower."""
    return (min(TrainConfig.head_lr[0], peak), peak)


DOMAIN_ADD_LR_SPAN = 100  # `domain add --lr L` trains with the cyclic learning rate L / 100 .. L


def domain_add_head_lr(peak: float) -> tuple[float, float]:
    """The cyclic learning-rate range of `domain add --lr PEAK`: PEAK / DOMAIN_ADD_LR_SPAN .. PEAK."""
    return (peak / DOMAIN_ADD_LR_SPAN, peak)


# what `unictr domain add` trains with unless told otherwise (only the DSN trains: a higher rate). Its rate starts
# at the peak and decays (unictr_core.fit.domain_training.dsn_optimizer), so the best epoch comes early: on the
# built-in board_games it was epoch 2-5 of 20; 8 epochs with patience 2 save the idle rest
DOMAIN_ADD_DEFAULTS = TrainConfig(epochs=8, head_lr=domain_add_head_lr(3e-3), patience=2)
# the quick ID baselines `unictr domain add --compare` trains on the add's own rows next to the DSN
# (unictr_core.baselines.compare): none unless asked, so an add costs what it did
DOMAIN_ADD_COMPARE: tuple[str, ...] = ()


def tune_layers_text(tuned: Optional[int]) -> str:
    """Where LoRA is, in words, for ``ModelConfig.tune_layers``."""
    if tuned is None:
        return "every layer"
    return "no layer (frozen backbone)" if tuned == 0 else f"the top {tuned} layers"
