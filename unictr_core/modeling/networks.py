"""The heads of Uni-CTR: ladder blocks, the attention-pooling gate, towers, DSN and general network.

Every module here respects the padding mask: attention never attends to padding
and pooling gives padding zero weight, so a sample's output does not depend on
how long the other samples of its batch are. Towers use no BatchNorm, so no
domain's statistics leak into another's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence

import torch
from torch import nn

from unictr_core.config import ModelConfig
from unictr_core.modeling.ids import IdEmbedding, check_ids
from unictr_core.modeling.stats import FEATURES, CountTables, count_features

RESIDUAL_INIT_STD = 0.0  # a residual DSN's last tower layer starts at N(0, std) (0: exactly zero)


def narrowed_width(hidden_size: int, ratio: float, heads: int) -> int:
    """hidden_size * ratio, rounded to a positive multiple of ``heads``."""
    width = max(heads, int(round(hidden_size * ratio / heads)) * heads)
    return width


class AttentionPooling(nn.Module):
    """score = tanh(O Wk) q; A = softmax(score) over non-padding positions; R = A^T O."""

    def __init__(self, dim: int):
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(dim) / dim**0.5)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(self.key(states)) @ self.query  # [B, T]
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bt,btd->bd", weights, states)


class Tower(nn.Module):
    """MLP (e.g. 512-256-128) ending in one logit; dropout, no BatchNorm."""

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for width in dims:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled).squeeze(-1)


class MLPLadder(nn.Module):
    def __init__(self, dim: int, width: int, heads: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.up(torch.relu(self.down(x)))))


class AttentionLadder(nn.Module):
    """Project down, self-attention across tokens (padding masked), project back, residual + LayerNorm."""

    def __init__(self, dim: int, width: int, heads: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def attend(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(z, z, z, key_padding_mask=~mask, need_weights=False)
        return self.attention_norm(z + attended)

    def inner(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attend(z, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.inner(self.down(x), mask)
        return self.norm(x + self.dropout(self.up(z)))


class TransformerLadder(AttentionLadder):
    """The paper's default block: attention as above followed by a feed-forward sub-layer."""

    def __init__(self, dim: int, width: int, heads: int, dropout: float):
        super().__init__(dim, width, heads, dropout)
        self.feed_forward = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(2 * width, width))
        self.feed_forward_norm = nn.LayerNorm(width)

    def inner(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.attend(z, mask)
        return self.feed_forward_norm(z + self.feed_forward(z))


LADDER_BLOCKS = {"mlp": MLPLadder, "attention": AttentionLadder, "transformer": TransformerLadder}


def ladder_frequency(config: ModelConfig, num_layers: int) -> int:
    if config.ladder_freq is not None:
        if config.ladder_freq > num_layers:
            raise ValueError(f"ladder_freq {config.ladder_freq} exceeds the backbone's {num_layers} layers")
        return config.ladder_freq
    return max(1, round(num_layers / 4))


@dataclass(frozen=True)
class DsnSpec:
    """What a DSN holds beyond the core's ModelConfig; stored in its bundle (``domain.yaml``, ``dsn:``).

    ``residual``: it adds a correction to the general network's logit; ``stats``: it reads the domain's
    count statistics (:mod:`unictr_core.modeling.stats`); ``calibration``: its logit is finally scaled,
    ``a * logit + b`` (two scalars fitted on validation, :mod:`unictr_core.fit.calibration`; identity until then).
    """

    residual: bool = False
    stats: bool = False
    calibration: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "DsnSpec":
        """From a bundle's ``dsn:`` entry, which holds every field (checked by
        :func:`unictr_core.store.records.read_domain_record`); KeyError for a missing one."""
        return cls(**{f.name: bool(record[f.name]) for f in fields(cls)})


def as_spec(spec) -> DsnSpec:
    """A DsnSpec from a DsnSpec or a bool (``residual``, the earlier signature)."""
    return spec if isinstance(spec, DsnSpec) else DsnSpec(residual=bool(spec))


class DomainNetwork(nn.Module):
    """DSN: ladder over the backbone's hidden states, gate (attention pooling over [h_L; lad_F]), tower.

    lad_1 = Ladder_1(h_freq); lad_f = Ladder_f(h_{f*freq} + lad_{f-1}).

    A *residual* DSN adds its tower's output to the general network's logit
    (which it does not train: the general logit comes in detached). Its
    tower's last layer starts small and random (std :data:`RESIDUAL_INIT_STD`), so before training it
    predicts what the general network predicts zero-shot (up to about 1e-3 in the logit) and every layer
    gets gradient from the first step. ``unictr domain add`` uses it by default.

    With ``spec.stats`` it also reads the domain's count features (user's and item's past positive rate and
    count, base rate: :mod:`unictr_core.modeling.stats`), fused with the text in two ways: appended to the
    tower's input, and through a linear *wide* term added to the logit (zero at the start). With
    ``spec.calibration`` the logit is finally scaled: ``a * logit + b`` (buffer ``calibration``).
    """

    def __init__(self, config: ModelConfig, hidden_size: int, num_layers: int, residual=False):
        super().__init__()
        spec = as_spec(residual)
        self.spec = spec
        self.num_layers = num_layers
        self.residual = spec.residual
        if config.ladder_kind == "none":
            self.freq = 0
            self.ladders = nn.ModuleList()
        else:
            self.freq = ladder_frequency(config, num_layers)
            block = LADDER_BLOCKS[config.ladder_kind]
            width = narrowed_width(hidden_size, config.narrowed_ratio, config.ladder_heads)
            count = num_layers // self.freq
            self.ladders = nn.ModuleList(
                block(hidden_size, width, config.ladder_heads, config.dropout) for _ in range(count)
            )
        self.gate = AttentionPooling(hidden_size)
        self.id_embedding = _id_embedding(config) if config.ids in ("dsn", "all") else None
        self.counts = CountTables(config.id_buckets) if spec.stats else None
        self.wide = nn.Linear(FEATURES, 1) if spec.stats else None
        stats_width = FEATURES if spec.stats else 0
        self.tower = Tower(hidden_size + _id_width(self.id_embedding) + stats_width, config.tower_dims,
                           config.dropout)
        if spec.calibration:
            self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self._start_small()

    def _start_small(self) -> None:
        """A residual DSN starts (almost) at the general network: small last tower layer, zero wide term."""
        if self.residual:
            last = self.tower.mlp[-1]
            if RESIDUAL_INIT_STD > 0:
                nn.init.normal_(last.weight, std=RESIDUAL_INIT_STD)
            else:
                nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)

    @torch.no_grad()
    def scale_correction(self, scale: float) -> None:
        """Multiply a residual DSN's correction to the general logit by ``scale`` (its shrinkage,
        :mod:`unictr_core.fit.shrinkage`): the correction is linear in the tower's last layer and the wide
        term, so their weights are scaled in place. ValueError for a DSN that is not residual."""
        if not self.residual:
            raise ValueError("only a residual DSN has a correction to scale")
        if not 0.0 <= scale <= 1.0:
            raise ValueError(f"a DSN's shrinkage must lie in [0, 1], got {scale}")
        layers = [self.tower.mlp[-1]] + ([self.wide] if self.wide is not None else [])
        for layer in layers:
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)

    @property
    def reads_ids(self) -> bool:
        """Whether batches must carry ID slots for this DSN (ID embeddings or count statistics)."""
        return self.id_embedding is not None or self.counts is not None

    @property
    def required_layers(self) -> list[int]:
        """Indices into the backbone's hidden states (0 = embeddings) that this DSN reads."""
        ladder_layers = [(f + 1) * self.freq for f in range(len(self.ladders))]
        return sorted(set(ladder_layers + [self.num_layers]))

    def forward(self, hidden_states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor,
                general_logits: Optional[torch.Tensor] = None, ids: Optional[torch.Tensor] = None,
                counts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The DSN's logits; a residual DSN needs the general network's logits of the same rows, an ID-aware
        one the rows' ids (:func:`unictr_core.modeling.ids.id_tensor`). A DSN with statistics reads the rows'
        ``counts`` [B, 6] when given (training: causal counts), else looks them up in its tables by ``ids``."""
        if self.residual and general_logits is None:
            raise ValueError("a residual DSN needs the general network's logits")
        check_ids("DSN", self.id_embedding, ids)
        pooled = _with_ids(self.gate(*self._gate_input(hidden_states, mask)), self.id_embedding, ids)
        features = None
        if self.counts is not None:
            if counts is None:
                if ids is None:
                    raise ValueError("this DSN reads count statistics: pass the batch's ids (or its counts)")
                counts = self.counts.lookup(ids)
            features = count_features(counts).to(pooled.dtype)
            pooled = torch.cat([pooled, features], dim=1)
        logits = self.tower(pooled)
        if features is not None:
            logits = logits + self.wide(features).squeeze(-1)
        if self.residual:
            logits = logits + general_logits.detach()
        if self.spec.calibration:
            logits = self.calibration[0] * logits + self.calibration[1]
        return logits

    def _gate_input(self, hidden_states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor):
        """What the gate pools: h_L, followed by the last ladder block's output when there are ladders."""
        last = hidden_states[self.num_layers]
        if not len(self.ladders):
            return last, mask
        ladder = None
        for f, block in enumerate(self.ladders):
            h = hidden_states[(f + 1) * self.freq]
            ladder = block(h if ladder is None else h + ladder, mask)
        return torch.cat([last, ladder], dim=1), torch.cat([mask, mask], dim=1)


class GeneralNetwork(nn.Module):
    """Attention pooling over h_L and a tower: the prediction for any domain, including unseen ones."""

    def __init__(self, config: ModelConfig, hidden_size: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.pool = AttentionPooling(hidden_size)
        self.id_embedding = _id_embedding(config) if config.ids == "all" else None
        self.tower = Tower(hidden_size + _id_width(self.id_embedding), config.tower_dims, config.dropout)

    @property
    def required_layers(self) -> list[int]:
        return [self.num_layers]

    def forward(self, hidden_states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor,
                ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_ids("general network", self.id_embedding, ids)
        return self.tower(_with_ids(self.pool(hidden_states[self.num_layers], mask), self.id_embedding, ids))


def _id_embedding(config: ModelConfig) -> IdEmbedding:
    return IdEmbedding(config.id_buckets, config.id_dim, config.id_history, len(config.id_fields))


def _id_width(embedding: Optional[IdEmbedding]) -> int:
    return 0 if embedding is None else embedding.out_dim


def _with_ids(pooled: torch.Tensor, embedding: Optional[IdEmbedding], ids: Optional[torch.Tensor]) -> torch.Tensor:
    """The pooled text representation, followed by the ID embeddings when the network reads them."""
    return pooled if embedding is None else torch.cat([pooled, embedding(ids)], dim=1)
