"""Language-model backbones: from a registered name (plugin) or any local Hugging Face directory.

Encoders (BERT-style) and decoders (LLaMA-style) are both supported. Prompts are
padded on the right: a causal model's real tokens never attend to right padding,
and UniCTR pools with masked attention instead of reading the last position, so
one padding side serves both kinds. A decoder without a pad token gets its EOS
(or UNK) token as pad; the attention mask keeps it out of every computation.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers import logging as hf_logging

from unictr_core import plugins
from unictr_core.data.files import hash_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")

# LoRA target modules by model_type where peft has no default.
EXTRA_LORA_TARGETS = {
    "mpnet": ["q", "v"],
}


class BackboneError(ValueError):
    pass


@dataclass
class Backbone:
    reference: str  # what the user asked for: a registered name or a directory
    directory: Path
    model: torch.nn.Module
    tokenizer: object
    is_decoder: bool
    num_layers: int
    hidden_size: int
    model_type: str
    weights_sha256: str

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def resolve_directory(reference: str) -> Path:
    """A registered backbone name, or a path to a local Hugging Face model directory."""
    specs = plugins.backbones()
    if reference in specs:
        return Path(specs[reference].locate())
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BackboneError(f"backbone directory {path} has no config.json: not a Hugging Face model directory")
        return path.resolve()
    known = ", ".join(sorted(specs)) or "none"
    raise BackboneError(
        f"unknown backbone '{reference}': not a registered name (known: {known}) and not an existing directory"
    )


def weights_sha256(directory: Path) -> str:
    """SHA-256 over the weight files of a model directory (names and bytes, sorted by name)."""
    digest = hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise BackboneError(f"backbone directory {directory} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for path in files:
        digest.update(path.name.encode())
        hash_file(digest, path)
    return digest.hexdigest()


def _is_decoder(config) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any("CausalLM" in a for a in architectures)


def lora_targets_for(model_type: str, model: torch.nn.Module) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    targets = peft_defaults.get(model_type) or EXTRA_LORA_TARGETS.get(model_type)
    if targets:
        return list(targets)
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for pair in (("q_proj", "v_proj"), ("query", "value"), ("q", "v")):
        if set(pair) <= names:
            return list(pair)
    raise BackboneError(
        f"cannot choose LoRA target modules for model type '{model_type}'; set lora_targets in the model config"
    )


def _tokenizer(directory: Path):
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise BackboneError(f"tokenizer in {directory} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer(reference: str):
    """The tokenizer of a backbone (set up for padding exactly as :func:`load_backbone` does), without its weights."""
    return _tokenizer(resolve_directory(reference))


def check_weights(directory: Path, expected_sha256: Optional[str] = None) -> str:
    """The directory's weights SHA-256, checked before anything is loaded; safetensors weights only.

    A directory whose weights are pickle-based (``.bin``, ``.pt``, ``.pth``) and not
    safetensors is refused: loading them could run code. With ``expected_sha256``
    (a core's record), a different SHA-256 is refused too.
    """
    if not any(p.is_file() and p.name.endswith(".safetensors") for p in directory.iterdir()):
        others = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        found = f" (found {', '.join(others)})" if others else ""
        raise BackboneError(f"backbone directory {directory} holds no .safetensors weights{found}: UniCTR loads "
                            "safetensors only, never pickle-based .bin/.pt files; convert the model with "
                            "`save_pretrained(..., safe_serialization=True)` in a trusted environment")
    actual = weights_sha256(directory)
    if expected_sha256 is not None and actual != expected_sha256:
        raise BackboneError(f"backbone at {directory} has weights SHA-256 {actual[:12]}…, but this core was trained "
                            f"on {str(expected_sha256)[:12]}…: the core only works with the exact backbone it was "
                            "trained on (nothing was loaded)")
    return actual


def load_backbone(reference: str, expected_sha256: Optional[str] = None) -> Backbone:
    """Load a backbone (safetensors weights only); with ``expected_sha256`` its weights are verified first."""
    directory = resolve_directory(reference)
    sha256 = check_weights(directory, expected_sha256)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # unused LM-head weights are expected and not worth a warning
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32,
                                          use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = _tokenizer(directory)
    decoder = _is_decoder(config)
    text_config = getattr(config, "text_config", None) or config
    logging.getLogger(__name__).debug("loaded backbone %s from %s", reference, directory)
    return Backbone(
        reference=reference,
        directory=directory,
        model=model,
        tokenizer=tokenizer,
        is_decoder=decoder,
        num_layers=int(text_config.num_hidden_layers),
        hidden_size=int(text_config.hidden_size),
        model_type=str(config.model_type),
        weights_sha256=sha256,
    )


# --------------------------------------------------------------------------- running the top layers only
LAYER_STACK_NAMES = ("layer", "layers", "h", "block", "blocks")


def layer_stack(model: torch.nn.Module, num_layers: int) -> tuple[str, torch.nn.ModuleList]:
    """The dotted name (inside ``model``) and the ``ModuleList`` of the backbone's transformer layers."""
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers
             and name.rsplit(".", 1)[-1] in LAYER_STACK_NAMES]
    if len(found) != 1:
        raise BackboneError(f"cannot find the list of the {num_layers} transformer layers of "
                            f"{type(model).__name__} (found {len(found)} candidates); use --tune-layers all")
    return found[0]


class _PassThroughEmbeddings(torch.nn.Module):
    """Stands in for an encoder's embedding module: hands ``inputs_embeds`` on unchanged."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        return inputs_embeds


def run_top_layers(model: torch.nn.Module, num_layers: int, start: int, hidden: torch.Tensor,
                   attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Hidden states h_start ... h_L of a (transformers) base model, starting from h_start instead of the tokens.

    ``hidden`` is h_start, the input of layer ``start`` (0-based), padded like
    ``attention_mask``. The model runs with its layer list cut to the layers from
    ``start`` on, fed ``hidden`` as ``inputs_embeds``; an encoder's embedding
    module (which would add position embeddings again) is bypassed. Positions,
    the attention mask and the final norm of a decoder are the model's own, so
    the result equals the full forward's hidden states from ``start`` on (tested).
    """
    name, layers = layer_stack(model, num_layers)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    embeddings = getattr(model, "embeddings", None)
    config = model.config
    layer_types = getattr(config, "layer_types", None)  # per-layer attention kinds (e.g. Gemma-3), indexed by position
    parent._modules[attribute] = torch.nn.ModuleList(list(layers)[start:])
    if embeddings is not None:
        model._modules["embeddings"] = _PassThroughEmbeddings()
    if layer_types is not None:
        config.layer_types = list(layer_types)[start:]
    try:
        out = model(inputs_embeds=hidden, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    finally:
        parent._modules[attribute] = layers
        if embeddings is not None:
            model._modules["embeddings"] = embeddings
        if layer_types is not None:
            config.layer_types = layer_types
    return tuple(out.hidden_states)
