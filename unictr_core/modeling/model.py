"""The Uni-CTR model: LoRA-tuned backbone, general network, and one DSN per domain.

A batch runs the backbone once; then each domain present in the batch runs only
its own DSN on its own rows. The loss is BCE(DSN) + BCE(general): a sample's
gradient reaches its own DSN, the general network and the LoRA weights, and
never another domain's DSN.

``ModelConfig.tune_layers = K`` puts LoRA only in the top K transformer layers
(0: none, the backbone is frozen; None: every layer, the paper). Everything below
the *cut* (layer L-K) then never changes, so :meth:`UniCTRModel.forward` can start
from cached hidden states (see :mod:`unictr_core.modeling.hidden_cache`): it runs only
the top K layers, from the cached input of the first tuned layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from unictr_core.config import ModelConfig
from unictr_core.data.prompts import PromptTemplate, TemplateSet
from unictr_core.modeling.backbone import Backbone, layer_stack, lora_targets_for, run_top_layers
from unictr_core.modeling.networks import DomainNetwork, DsnSpec, GeneralNetwork, as_spec
from unictr_core.modeling.summary import summarize


@dataclass
class ModelOutput:
    general_logits: torch.Tensor  # [B]
    dsn_logits: torch.Tensor  # [B]; equals general_logits where has_dsn is False
    has_dsn: torch.Tensor  # [B] bool

    def float(self) -> "ModelOutput":
        """The logits in float32 (the loss and probabilities are computed in float32 under bf16 autocast too)."""
        return ModelOutput(self.general_logits.float(), self.dsn_logits.float(), self.has_dsn)


class UniCTRModel(nn.Module):
    def __init__(self, backbone: Backbone, config: ModelConfig, domains: Iterable[str] = (),
                 templates: Optional[TemplateSet] = None, residual_dsns: bool = False):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        config.validate()
        self.config = config
        self.backbone_info = backbone
        self.templates = templates or TemplateSet()
        self.num_layers = backbone.num_layers
        self.hidden_size = backbone.hidden_size
        targets = config.lora_targets or lora_targets_for(backbone.model_type, backbone.model)
        self.lora_targets = list(targets)
        tuned = self.num_layers if config.tune_layers is None else config.tune_layers
        if tuned > self.num_layers:
            raise ValueError(f"tune_layers {tuned} exceeds the backbone's {self.num_layers} layers")
        self.cut = self.num_layers - tuned  # layers below the cut never change: their outputs can be cached
        self.quantized = False
        if tuned == 0:  # frozen backbone, heads only
            for p in backbone.model.parameters():
                p.requires_grad_(False)
            self.backbone = backbone.model
        else:
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=self._lora_modules(backbone, self.lora_targets), bias="none")
            with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecated
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                self.backbone = get_peft_model(backbone.model, lora)
        self.general = GeneralNetwork(config, self.hidden_size, self.num_layers)
        self.dsns = nn.ModuleDict()
        for domain in domains:
            self.add_domain(domain, spec=residual_dsns)

    def _lora_modules(self, backbone: Backbone, targets: list[str]) -> list[str]:
        """peft target modules: the short names everywhere, or the full names of those in layers >= the cut."""
        if self.cut == 0:
            return targets
        stack, layers = layer_stack(backbone.model, self.num_layers)
        prefix = f"{stack}." if stack else ""
        return [f"{prefix}{i}.{name}" for i in range(self.cut, self.num_layers)
                for name, module in layers[i].named_modules()
                if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]

    @property
    def caches_head_inputs(self) -> bool:
        """Whether a cache of this model's frozen states holds what the heads read (nothing is tuned above the
        cut: the backbone is frozen), token summaries included; else it holds token states at and below the cut."""
        return self.cut == self.num_layers

    def read_layers(self, domains: Optional[Sequence[str]] = None) -> list[int]:
        """The hidden states (0 = embeddings) the general network and the DSNs (of ``domains``; default all) read."""
        dsns = self.dsns.values() if domains is None else [self.dsns[d] for d in set(domains) if d in self.dsns]
        return sorted(set(self.general.required_layers).union(*(d.required_layers for d in dsns)))

    def cached_layers(self) -> list[int]:
        """Hidden states to cache when training above the cut: those the heads read at or below it, and the cut.

        Empty when every layer is tuned (nothing below the cut).
        """
        if self.cut == 0:
            return []
        return sorted({layer for layer in self.read_layers() if layer <= self.cut} | {self.cut})

    # ----------------------------------------------------------------- domains
    @property
    def domains(self) -> list[str]:
        return list(self.dsns.keys())

    def new_dsn(self, spec: DsnSpec | bool = False) -> DomainNetwork:
        """A DSN built by ``spec`` (a DsnSpec, or a bool: residual or not)."""
        return DomainNetwork(self.config, self.hidden_size, self.num_layers, as_spec(spec))

    def add_domain(self, domain: str, template: Optional[PromptTemplate] = None,
                   spec: DsnSpec | bool = False) -> DomainNetwork:
        """A new DSN for ``domain`` built by ``spec`` (see DsnSpec; a bool: residual or not)."""
        if domain in self.dsns:
            raise ValueError(f"domain '{domain}' already has a DSN")
        self.dsns[domain] = self.new_dsn(spec)
        if template is not None:
            self.templates.templates[domain] = template
        return self.dsns[domain]

    def drop_dsn(self, domain: str) -> None:
        """Forget the DSN and the template of ``domain`` (in memory; the home is not touched)."""
        del self.dsns[domain]
        self.templates.templates.pop(domain, None)

    # ----------------------------------------------------------------- forward
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All hidden states h0 (embeddings) ... hL of the backbone."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states)

    def summarize(self, states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor,
                  layers: Optional[Sequence[int]] = None) -> tuple[list[Optional[torch.Tensor]], torch.Tensor]:
        """What the heads read of ``states``: the ``layers`` kept (default: those the heads read; None elsewhere),
        as token summaries when ``config.token_summary`` > 0 (:mod:`unictr_core.modeling.summary`), and its mask."""
        keep = set(self.read_layers() if layers is None else layers)
        kept = [h if i in keep else None for i, h in enumerate(states)]
        return summarize(kept, mask, self.config.token_summary)

    def head_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    layers: Optional[Sequence[int]] = None) -> tuple[list[Optional[torch.Tensor]], torch.Tensor]:
        """A backbone pass and :meth:`summarize`: the states the heads read (at ``layers``) and their mask."""
        return self.summarize(self.encode(input_ids, attention_mask), attention_mask, layers)

    @property
    def id_buckets(self) -> Optional[int]:
        """Hash buckets of the ID slots when any network reads them (ID embeddings, a DSN's count statistics;
        batches then carry ids), else None."""
        reads = self.config.ids != "none" or any(d.reads_ids for d in self.dsns.values())
        return self.config.id_buckets if reads else None

    def heads(self, hidden_states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor,
              domains: Sequence[str], ids: Optional[torch.Tensor] = None,
              counts: Optional[torch.Tensor] = None) -> ModelOutput:
        """General network on every row; each domain's DSN on its own rows only (``ids``: see id_buckets).
        ``counts``: [B, 6] causal count statistics of the rows (training DSNs that read statistics); without
        them such a DSN looks its rows up in its count tables."""
        mask = mask.bool()
        general = self.general(hidden_states, mask, ids)
        dsn_logits = general
        has_dsn = torch.zeros(len(domains), dtype=torch.bool, device=mask.device)
        for domain in dict.fromkeys(domains):
            if domain not in self.dsns:
                continue
            rows = torch.tensor([i for i, d in enumerate(domains) if d == domain], dtype=torch.long, device=mask.device)
            sub_states = [None if h is None else h.index_select(0, rows) for h in hidden_states]
            sub_ids = None if ids is None else ids.index_select(0, rows)
            sub_counts = None if counts is None else counts.index_select(0, rows)
            logits = self.dsns[domain](sub_states, mask.index_select(0, rows), general.index_select(0, rows),
                                       ids=sub_ids, counts=sub_counts)
            dsn_logits = dsn_logits.index_put((rows,), logits)
            has_dsn[rows] = True
        return ModelOutput(general_logits=general, dsn_logits=dsn_logits, has_dsn=has_dsn)

    def encode_from_cut(self, cached: Sequence[Optional[torch.Tensor]], attention_mask: torch.Tensor
                        ) -> list[Optional[torch.Tensor]]:
        """All hidden states, from ``cached`` (which holds :meth:`cached_layers`): the tuned layers run on."""
        states = list(cached)
        if self.cut < self.num_layers:
            base = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
            top = run_top_layers(base, self.num_layers, self.cut, states[self.cut], attention_mask)
            states[self.cut + 1:] = top[1:]
        return states

    def forward(self, input_ids: Optional[torch.Tensor], attention_mask: torch.Tensor, domains: Sequence[str],
                ids: Optional[torch.Tensor] = None,
                hidden_states: Optional[Sequence[Optional[torch.Tensor]]] = None,
                counts: Optional[torch.Tensor] = None) -> ModelOutput:
        """Logits of every row; ``ids``: hashed ID buckets of an ID-aware model (see :mod:`unictr_core.modeling.ids`);
        with ``hidden_states`` (cached, see :meth:`cached_layers`) the backbone runs only above the cut and
        ``input_ids`` is not used. A frozen backbone's cache holds what the heads read (:attr:`caches_head_inputs`;
        ``attention_mask`` is then the cache's mask). ``counts``: see :meth:`heads`."""
        if hidden_states is None:
            states, mask = self.head_inputs(input_ids, attention_mask)
        elif self.caches_head_inputs:
            states, mask = list(hidden_states), attention_mask
        else:
            states, mask = self.summarize(self.encode_from_cut(hidden_states, attention_mask), attention_mask)
        return self.heads(states, mask, domains, ids, counts)

    # ----------------------------------------------------------------- weights
    def lora_state(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.backbone.named_parameters() if "lora_" in name}

    def core_state(self) -> dict[str, torch.Tensor]:
        """LoRA weights + general network: everything of the core that is not the pretrained backbone."""
        state = {f"backbone.{k}": v for k, v in self.lora_state().items()}
        state.update({f"general.{k}": v for k, v in self.general.state_dict().items()})
        return state

    def load_core_state(self, state: dict[str, torch.Tensor]) -> None:
        lora = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        general = {k[len("general."):]: v for k, v in state.items() if k.startswith("general.")}
        expected = set(self.lora_state())
        if set(lora) != expected:
            missing, unexpected = sorted(expected - set(lora)), sorted(set(lora) - expected)
            raise ValueError(f"core weights do not match the architecture: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        params = dict(self.backbone.named_parameters())
        with torch.no_grad():
            for name, value in lora.items():
                if params[name].shape != value.shape:
                    raise ValueError(f"core weight {name} has shape {tuple(value.shape)}, "
                                     f"expected {tuple(params[name].shape)}")
                params[name].copy_(value)
        self.general.load_state_dict(general, strict=True)

    def freeze_core(self) -> None:
        """Freeze backbone, LoRA, general network and every DSN (before training a new DSN)."""
        for p in self.parameters():
            p.requires_grad_(False)
