"""Single-domain baselines: DeepFM, DCN, AutoInt, xDeepFM (written from the papers' descriptions).

* DeepFM (Guo et al. 2017): first-order terms + FM pairwise interactions +
  a DNN, all on the same field embeddings.
* DCN (Wang et al. 2017): cross network x_{l+1} = x_0 (x_l . w_l) + b_l + x_l
  in parallel with a DNN, concatenated into one output layer.
* AutoInt (Song et al. 2019): stacked multi-head self-attention over the
  field embeddings with residual connections, flattened into a logistic layer.
* xDeepFM (Lian et al. 2018): a Compressed Interaction Network (vector-wise
  explicit interactions, sum-pooled per feature map) + a DNN + linear terms.
* PNN (Qu et al. 2016), the inner-product variant: the product layer feeds the
  DNN with the field embeddings and every pairwise inner product.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from unictr_core.baselines.base import BaselineModel
from unictr_core.baselines.features import FeatureSpec
from unictr_core.baselines.layers import FieldEmbedding, mlp, out_dim


class _SingleDomain(BaselineModel):
    """Trained on one domain's rows only, so the domain field is constant there: it is not embedded
    (and so cannot inject an untrained vector when the model scores another domain zero-shot)."""

    dropped_fields = ("domain",)


class _WithLinear(_SingleDomain):
    """Adds first-order (per-value scalar weight) terms, shared by DeepFM and xDeepFM."""

    def __init__(self, spec: FeatureSpec, **kwargs):
        super().__init__(spec, **kwargs)
        self.first_order = FieldEmbedding(spec, 1, drop=self.dropped_fields)
        self.bias = nn.Parameter(torch.zeros(1))

    def linear_term(self, fields: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.first_order(fields, history).sum(dim=(1, 2)) + self.bias


class DeepFM(_WithLinear):
    def __init__(self, spec: FeatureSpec, **kwargs):
        super().__init__(spec, **kwargs)
        self.dnn = mlp(self.flat_dim, self.hidden, self.dropout)
        self.dnn_out = nn.Linear(out_dim(self.flat_dim, self.hidden), 1)

    def forward(self, fields, history, head):
        emb = self.embedding(fields, history)                      # [N, S, D]
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        fm = 0.5 * (square_of_sum - sum_of_square).sum(dim=1)
        deep = self.dnn_out(self.dnn(emb.flatten(1))).squeeze(1)
        return self.linear_term(fields, history) + fm + deep


class DCN(_SingleDomain):
    def __init__(self, spec: FeatureSpec, cross_layers: int = 3, **kwargs):
        super().__init__(spec, **kwargs)
        self.cross_w = nn.ParameterList(
            [nn.Parameter(torch.randn(self.flat_dim) * 0.01) for _ in range(cross_layers)])
        self.cross_b = nn.ParameterList([nn.Parameter(torch.zeros(self.flat_dim)) for _ in range(cross_layers)])
        self.dnn = mlp(self.flat_dim, self.hidden, self.dropout)
        self.out = nn.Linear(self.flat_dim + out_dim(self.flat_dim, self.hidden), 1)

    def forward(self, fields, history, head):
        x0 = self.embedding(fields, history).flatten(1)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return self.out(torch.cat([x, self.dnn(x0)], dim=1)).squeeze(1)


class _SelfAttentionLayer(nn.Module):
    """One AutoInt interacting layer: multi-head attention across fields + residual projection + ReLU."""

    def __init__(self, in_dim: int, att_dim: int, heads: int):
        super().__init__()
        self.heads, self.att_dim = heads, att_dim
        self.query = nn.Linear(in_dim, att_dim * heads, bias=False)
        self.key = nn.Linear(in_dim, att_dim * heads, bias=False)
        self.value = nn.Linear(in_dim, att_dim * heads, bias=False)
        self.residual = nn.Linear(in_dim, att_dim * heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # x: [N, S, in_dim]
        n, s, _ = x.shape

        def split(t):
            return t.view(n, s, self.heads, self.att_dim).transpose(1, 2)   # [N, H, S, d]

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / self.att_dim ** 0.5, dim=-1)   # over fields
        attended = (weights @ v).transpose(1, 2).reshape(n, s, self.heads * self.att_dim)
        return torch.relu(attended + self.residual(x))


class AutoInt(_SingleDomain):
    def __init__(self, spec: FeatureSpec, attention_layers: int = 2, attention_heads: int = 2,
                 attention_dim: int = 8, **kwargs):
        super().__init__(spec, **kwargs)
        layers, in_dim = [], self.embed_dim
        for _ in range(attention_layers):
            layers.append(_SelfAttentionLayer(in_dim, attention_dim, attention_heads))
            in_dim = attention_dim * attention_heads
        self.interacting = nn.Sequential(*layers)
        self.out = nn.Linear(self.num_slots * in_dim, 1)

    def forward(self, fields, history, head):
        x = self.interacting(self.embedding(fields, history))
        return self.out(x.flatten(1)).squeeze(1)


class XDeepFM(_WithLinear):
    def __init__(self, spec: FeatureSpec, cin_layers: Sequence[int] = (16, 16), **kwargs):
        super().__init__(spec, **kwargs)
        self.cin = nn.ModuleList()
        prev = self.num_slots
        for maps in cin_layers:
            # a 1x1 convolution over the (prev x fields) outer-product channels = the CIN's per-map weights
            self.cin.append(nn.Conv1d(prev * self.num_slots, maps, kernel_size=1))
            prev = maps
        self.cin_out = nn.Linear(sum(cin_layers), 1)
        self.dnn = mlp(self.flat_dim, self.hidden, self.dropout)
        self.dnn_out = nn.Linear(out_dim(self.flat_dim, self.hidden), 1)

    def forward(self, fields, history, head):
        x0 = self.embedding(fields, history)                      # [N, S, D]
        n, s, d = x0.shape
        x, pooled = x0, []
        for conv in self.cin:
            z = torch.einsum("nhd,nfd->nhfd", x, x0).reshape(n, -1, d)
            x = conv(z)                                             # [N, maps, D]
            pooled.append(x.sum(dim=2))
        cin = self.cin_out(torch.cat(pooled, dim=1)).squeeze(1)
        deep = self.dnn_out(self.dnn(x0.flatten(1))).squeeze(1)
        return self.linear_term(fields, history) + cin + deep


class PNN(_SingleDomain):
    def __init__(self, spec: FeatureSpec, **kwargs):
        super().__init__(spec, **kwargs)
        rows, cols = torch.triu_indices(self.num_slots, self.num_slots, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        in_dim = self.flat_dim + rows.numel()
        self.dnn = mlp(in_dim, self.hidden, self.dropout)
        self.out = nn.Linear(out_dim(in_dim, self.hidden), 1)

    def forward(self, fields, history, head):
        emb = self.embedding(fields, history)                       # [N, S, D]
        products = (emb[:, self.pair_rows] * emb[:, self.pair_cols]).sum(dim=2)
        return self.out(self.dnn(torch.cat([emb.flatten(1), products], dim=1))).squeeze(1)
