"""Multi-domain baselines: Shared-Bottom, MMoE, PLE, STAR (written from the papers' descriptions).

Each has one output head per training domain; ``head`` picks it per sample,
and only the heads present in a batch are computed.

* Shared-Bottom (Caruana 1997): shared MLP, then a tower per domain.
* MMoE (Ma et al. 2018): shared experts mixed by a per-domain softmax gate,
  then a tower per domain.
* PLE (Tang et al. 2020): Customized Gate Control levels with shared and
  domain-specific experts; a domain's gate mixes its own experts and the
  shared ones; between levels a shared gate mixes all experts (progressive
  extraction). 1 or 2 levels.
* STAR (Sheng et al. 2021): partitioned normalisation (shared x per-domain
  scale/shift, statistics kept per domain, never mixed), a star-topology FCN
  whose layer weights are shared weights multiplied elementwise with the
  domain's weights (biases added), and an auxiliary network on the domain
  indicator whose logit is added to the main one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from unictr_core.baselines.base import BaselineModel
from unictr_core.baselines.features import FeatureSpec
from unictr_core.baselines.layers import mlp, out_dim, per_head


def _tower(in_dim: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    return nn.Sequential(mlp(in_dim, hidden, dropout), nn.Linear(out_dim(in_dim, hidden), 1))


class _MultiDomain(BaselineModel):
    multi_domain = True

    def __init__(self, spec: FeatureSpec, tower_hidden: Sequence[int] = (32,), **kwargs):
        super().__init__(spec, **kwargs)
        if spec.num_domains < 1:
            raise ValueError(f"{type(self).__name__} needs at least one training domain")
        self.tower_hidden = tuple(tower_hidden)


class SharedBottom(_MultiDomain):
    def __init__(self, spec: FeatureSpec, **kwargs):
        super().__init__(spec, **kwargs)
        self.bottom = mlp(self.flat_dim, self.hidden, self.dropout)
        width = out_dim(self.flat_dim, self.hidden)
        self.towers = nn.ModuleList(_tower(width, self.tower_hidden, self.dropout) for _ in range(self.num_heads))

    def forward(self, fields, history, head):
        shared = self.bottom(self.embedding(fields, history).flatten(1))
        return per_head(head, len(head), lambda h, rows: self.towers[h](shared[rows]).squeeze(1), shared)


class MMoE(_MultiDomain):
    def __init__(self, spec: FeatureSpec, num_experts: int = 3, **kwargs):
        super().__init__(spec, **kwargs)
        self.experts = nn.ModuleList(mlp(self.flat_dim, self.hidden, self.dropout) for _ in range(num_experts))
        width = out_dim(self.flat_dim, self.hidden)
        self.gates = nn.ModuleList(nn.Linear(self.flat_dim, num_experts) for _ in range(self.num_heads))
        self.towers = nn.ModuleList(_tower(width, self.tower_hidden, self.dropout) for _ in range(self.num_heads))

    def forward(self, fields, history, head):
        x = self.embedding(fields, history).flatten(1)
        experts = torch.stack([e(x) for e in self.experts], dim=1)           # [N, E, W]

        def head_logit(h, rows):
            gate = torch.softmax(self.gates[h](x[rows]), dim=1).unsqueeze(2)
            return self.towers[h]((gate * experts[rows]).sum(dim=1)).squeeze(1)

        return per_head(head, len(head), head_logit, x)


class _ExtractionLevel(nn.Module):
    """One PLE level (a CGC): shared + per-domain experts, per-domain gates, and optionally a shared gate."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float, num_domains: int,
                 shared_experts: int, specific_experts: int, with_shared_gate: bool):
        super().__init__()
        self.shared = nn.ModuleList(mlp(in_dim, hidden, dropout) for _ in range(shared_experts))
        self.specific = nn.ModuleList(
            nn.ModuleList(mlp(in_dim, hidden, dropout) for _ in range(specific_experts)) for _ in range(num_domains))
        self.gates = nn.ModuleList(nn.Linear(in_dim, shared_experts + specific_experts) for _ in range(num_domains))
        total = shared_experts + specific_experts * num_domains
        self.shared_gate = nn.Linear(in_dim, total) if with_shared_gate else None

    @staticmethod
    def _mix(gate_logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(gate_logits, dim=1).unsqueeze(2) * experts).sum(dim=1)

    def forward(self, domain_inputs: list[torch.Tensor], shared_input: torch.Tensor, needed: list[int]):
        """``domain_inputs[d]`` [N, in] for every domain d in ``needed``; returns the new inputs and shared input."""
        shared = torch.stack([e(shared_input) for e in self.shared], dim=1)
        specific = {d: torch.stack([e(domain_inputs[d]) for e in self.specific[d]], dim=1) for d in needed}
        outputs = list(domain_inputs)
        for d in needed:
            outputs[d] = self._mix(self.gates[d](domain_inputs[d]), torch.cat([specific[d], shared], dim=1))
        new_shared = None
        if self.shared_gate is not None:
            every = torch.cat([specific[d] for d in range(len(self.specific))] + [shared], dim=1)
            new_shared = self._mix(self.shared_gate(shared_input), every)
        return outputs, new_shared


class PLE(_MultiDomain):
    def __init__(self, spec: FeatureSpec, levels: int = 2, shared_experts: int = 1, specific_experts: int = 2,
                 **kwargs):
        super().__init__(spec, **kwargs)
        if levels not in (1, 2):
            raise ValueError(f"PLE supports 1 or 2 extraction levels, got {levels}")
        width = out_dim(self.flat_dim, self.hidden)
        self.levels = nn.ModuleList(
            _ExtractionLevel(self.flat_dim if i == 0 else width, self.hidden, self.dropout, self.num_heads,
                             shared_experts, specific_experts, with_shared_gate=i < levels - 1)
            for i in range(levels))
        self.towers = nn.ModuleList(_tower(width, self.tower_hidden, self.dropout) for _ in range(self.num_heads))

    def forward(self, fields, history, head):
        x = self.embedding(fields, history).flatten(1)
        # The shared gate between levels mixes every domain's experts, so inner levels need all domains.
        everyone = list(range(self.num_heads))
        final = sorted(set(torch.unique(head).tolist()))
        inputs, shared = [x] * self.num_heads, x
        for i, level in enumerate(self.levels):
            inputs, shared = level(inputs, shared, final if i == len(self.levels) - 1 else everyone)
        return per_head(head, len(head), lambda h, rows: self.towers[h](inputs[h][rows]).squeeze(1), x)


class PartitionedNorm(nn.Module):
    """STAR's partitioned normalisation: per-domain batch statistics and running statistics.

    ``y = (gamma * gamma_d) * (x - mean_d) / sqrt(var_d + eps) + (beta + beta_d)``;
    in training mean_d/var_d come from the domain-d rows of the batch only, and
    each domain keeps its own running averages for evaluation. ``eps`` is larger
    than BatchNorm's usual 1e-5 because a feature that is constant within a
    domain has zero variance there, and an unseen value at zero-shot time
    would otherwise be scaled up ~300-fold.
    """

    def __init__(self, dim: int, num_domains: int, momentum: float = 0.1, eps: float = 1e-3):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.domain_gamma = nn.Parameter(torch.ones(num_domains, dim))
        self.domain_beta = nn.Parameter(torch.zeros(num_domains, dim))
        self.register_buffer("running_mean", torch.zeros(num_domains, dim))
        self.register_buffer("running_var", torch.ones(num_domains, dim))
        self.momentum, self.eps = momentum, eps

    def normalise(self, x: torch.Tensor, h: int) -> torch.Tensor:
        if self.training and x.shape[0] > 1:
            mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
            with torch.no_grad():
                self.running_mean[h].lerp_(mean.detach(), self.momentum)
                self.running_var[h].lerp_(x.var(dim=0, unbiased=True).detach(), self.momentum)
        else:
            mean, var = self.running_mean[h], self.running_var[h]
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return (self.gamma * self.domain_gamma[h]) * x_hat + (self.beta + self.domain_beta[h])


class StarLinear(nn.Module):
    """A star-topology layer: weight = shared (x) domain (elementwise), bias = shared + domain."""

    def __init__(self, in_dim: int, out_features: int, num_domains: int):
        super().__init__()
        self.shared_weight = nn.Parameter(torch.empty(in_dim, out_features))
        nn.init.xavier_uniform_(self.shared_weight)
        self.shared_bias = nn.Parameter(torch.zeros(out_features))
        self.domain_weight = nn.Parameter(torch.ones(num_domains, in_dim, out_features))
        self.domain_bias = nn.Parameter(torch.zeros(num_domains, out_features))

    def forward(self, x: torch.Tensor, h: int) -> torch.Tensor:
        weight = self.shared_weight * self.domain_weight[h]
        return x @ weight + self.shared_bias + self.domain_bias[h]


class STAR(_MultiDomain):
    # The domain indicator feeds the auxiliary network only (as in the paper), not the partitioned-normalised
    # star FCN: a feature constant within each domain has ~zero variance there and would blow up under PN.
    dropped_fields = ("domain",)

    def __init__(self, spec: FeatureSpec, aux_hidden: Sequence[int] = (32,), **kwargs):
        super().__init__(spec, **kwargs)
        self.norm = PartitionedNorm(self.flat_dim, self.num_heads)
        widths = [self.flat_dim, *self.hidden, 1]
        self.star = nn.ModuleList(StarLinear(a, b, self.num_heads) for a, b in zip(widths[:-1], widths[1:]))
        self.drop = nn.Dropout(self.dropout)
        self.domain_embedding = nn.Embedding(self.num_heads, self.embed_dim)
        self.aux = _tower(self.embed_dim + self.flat_dim, aux_hidden, self.dropout)

    def forward(self, fields, history, head):
        x = self.embedding(fields, history).flatten(1)

        def head_logit(h, rows):
            z = self.norm.normalise(x[rows], h)
            for i, layer in enumerate(self.star):
                z = layer(z, h)
                if i < len(self.star) - 1:
                    z = self.drop(torch.relu(z))
            dom = self.domain_embedding.weight[h].expand(len(rows), -1)
            aux = self.aux(torch.cat([dom, x[rows]], dim=1))
            return (z + aux).squeeze(1)

        return per_head(head, len(head), head_logit, x)
