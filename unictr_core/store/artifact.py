"""The weights of a home: the core and domain bundles saved and loaded as safetensors + YAML, no pickle.

The layout and names are in :mod:`unictr_core.store.layout`, the records' checks in
:mod:`unictr_core.store.records`. A bundle or core is written to a temporary folder beside its target and
renamed into place; inside a home, :mod:`unictr_core.store.writes` wraps these writes in one snapshot switch.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unictr_core import __version__
from unictr_core.config import ModelConfig
from unictr_core.data.files import atomic_directory, file_sha256
from unictr_core.data.prompts import PromptTemplate, TemplateSet
from unictr_core.modeling.backbone import BackboneError, load_backbone
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.networks import DsnSpec
from unictr_core.store import snapshots
from unictr_core.store.layout import CORE_WEIGHTS, DOMAIN_FILE, DSN_WEIGHTS, FORMAT_VERSION, MANIFEST, ArtifactError
from unictr_core.store.records import (core_identity, dsn_kind, fingerprint_of, verify_core_files,
                                       verify_domain_bundle)

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


# --------------------------------------------------------------------------- core
def save_core(model: UniCTRModel, core_dir: Path, training: Optional[dict] = None) -> str:
    """Write the core (manifest + LoRA and general-network weights); returns its fingerprint."""
    info = model.backbone_info
    with atomic_directory(Path(core_dir)) as staging:
        snapshots.step("write core weights")
        write_tensors(staging / CORE_WEIGHTS, model.core_state(), {"format": "unictr-core"})
        core_sha = file_sha256(staging / CORE_WEIGHTS)
        identity = {
            "backbone": {"weights_sha256": info.weights_sha256},
            "architecture": model.config.to_dict(),
            "lora_targets": model.lora_targets,
            "default_template": model.templates.default.to_dict(),
            "core_sha256": core_sha,
        }
        fingerprint = fingerprint_of(core_identity(identity))
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "unictr-core",
            "unictr_version": __version__,
            "created": _now(),
            "fingerprint": fingerprint,
            "backbone": {
                "reference": info.reference,
                "directory": str(info.directory),
                "model_type": info.model_type,
                "is_decoder": info.is_decoder,
                "num_layers": info.num_layers,
                "hidden_size": info.hidden_size,
                "weights_sha256": info.weights_sha256,
            },
            "tokenizer": {
                "directory": str(info.directory),
                "class": type(info.tokenizer).__name__,
                "max_length": model.config.max_length,
                "padding_side": "right",
                "pad_token": str(info.tokenizer.pad_token),
            },
            "architecture": model.config.to_dict(),
            "lora_targets": model.lora_targets,
            "default_template": model.templates.default.to_dict(),
            "core_sha256": core_sha,
            "dsn_layout": dsn_layout(model),
            "training": training or {},
        }
        snapshots.step("write core manifest")
        write_file(staging / MANIFEST, yaml.safe_dump(manifest, sort_keys=False).encode("utf-8"))
    return fingerprint


def dsn_layout(model: UniCTRModel) -> dict[str, dict[str, list[int]]]:
    """Per kind of DSN (:func:`unictr_core.store.records.dsn_kind`: with or without count statistics and
    calibration; residual and standalone DSNs share theirs), name -> shape of every tensor of such a DSN of
    ``model``: recorded in the core manifest, so that listing a home checks a bundle's weights without torch."""
    layouts = {}
    for stats in (False, True):
        for calibration in (False, True):
            spec = DsnSpec(stats=stats, calibration=calibration)
            layouts[dsn_kind(spec.to_dict())] = {name: list(tensor.shape)
                                                 for name, tensor in model.new_dsn(spec).state_dict().items()}
    return layouts


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``; a full disk or a refused permission is one ArtifactError naming the path."""
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_tensors(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``save_file`` whose failures (full disk, no permission) are one ArtifactError naming the path."""
    try:
        save_file(_contiguous(state), str(path), metadata=metadata)
    except (SafetensorError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())
        raise ArtifactError(f"cannot write {path}: {reason}") from None


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a file that is not one gives ArtifactError, not a traceback."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{what} {path} is not a valid safetensors file: {exc}") from None


def load_core(core_dir: Path) -> UniCTRModel:
    """The frozen core as a model with no DSN; verifies backbone and core weights against the manifest."""
    core_dir = Path(core_dir)
    manifest = verify_core_files(core_dir)  # typed, fingerprint recomputed, SHA-256 and finite floats checked
    weights = core_dir / CORE_WEIGHTS
    state = read_safetensors(weights, "core weights")
    config = ModelConfig.from_dict(manifest["architecture"])
    # the backbone's SHA-256 is checked before its weights are loaded (safetensors only)
    try:
        backbone = load_backbone(manifest["backbone"]["reference"],
                                 expected_sha256=manifest["backbone"]["weights_sha256"])
    except BackboneError as exc:
        raise ArtifactError(f"core {core_dir}: {exc}") from None
    templates = TemplateSet(default=PromptTemplate.from_dict(manifest["default_template"], source=str(weights)))
    config.lora_targets = manifest["lora_targets"]
    model = UniCTRModel(backbone, config, (), templates)
    try:
        model.load_core_state(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"core weights {weights} do not fit the architecture in its manifest: {exc}") from None
    model.core_fingerprint = manifest["fingerprint"]
    model.eval()
    return model


# --------------------------------------------------------------------------- domain bundles
def save_domain_bundle(model: UniCTRModel, domain: str, bundle_dir: Path, core_fingerprint: str,
                       metrics: Optional[dict] = None, extra: Optional[dict] = None) -> None:
    bundle_dir = Path(bundle_dir)
    with atomic_directory(bundle_dir) as staging:
        snapshots.step(f"write {domain}/{DSN_WEIGHTS}")
        write_tensors(staging / DSN_WEIGHTS, model.dsns[domain].state_dict(),
                      {"format": "unictr-dsn", "domain": domain})
        template = model.templates.templates.get(domain)
        record = {
            "format_version": FORMAT_VERSION,
            "kind": "unictr-domain",
            "name": domain,
            "created": _now(),
            "core_fingerprint": core_fingerprint,
            "dsn_sha256": file_sha256(staging / DSN_WEIGHTS),
            "dsn": model.dsns[domain].spec.to_dict(),
            "template": template.to_dict() if template is not None else None,
            "metrics": metrics or {},
        }
        record.update(extra or {})
        snapshots.step(f"write {domain}/{DOMAIN_FILE}")
        write_file(staging / DOMAIN_FILE, yaml.safe_dump(record, sort_keys=False).encode("utf-8"))


def load_domain_bundle(model: UniCTRModel, bundle_dir: Path, record: Optional[dict] = None) -> str:
    """Attach the DSN in ``bundle_dir`` to ``model``; refuses a bundle trained against another core.

    ``record``: the bundle's ``domain.yaml`` as :func:`unictr_core.store.records.verify_domain_bundle` returned
    it (the registry's :attr:`~unictr_core.store.registry.DomainEntry.record`), whose files are then not
    checked again; default: they are checked here. Every check runs before the DSN is attached: a bundle that
    fails one leaves ``model`` unchanged (ArtifactError), never a DSN with random weights.
    """
    bundle_dir = Path(bundle_dir)
    record = verify_domain_bundle(bundle_dir) if record is None else record
    name = record["name"]
    if name != bundle_dir.name:
        raise ArtifactError(f"domain bundle {bundle_dir} names domain '{name}'; its folder must be named '{name}'")
    fingerprint = getattr(model, "core_fingerprint", None)
    if record["core_fingerprint"] != fingerprint:
        raise ArtifactError(
            f"domain bundle '{name}' ({bundle_dir}) was trained against core {record['core_fingerprint'][:12]}…, "
            f"but the loaded core is {str(fingerprint)[:12]}…; retrain it with `unictr domain add {name}`"
        )
    weights = bundle_dir / DSN_WEIGHTS
    state = read_safetensors(weights, "DSN weights")
    template = (PromptTemplate.from_dict(record["template"], source=str(bundle_dir))
                if record.get("template") else None)
    spec = DsnSpec.from_record(record["dsn"])
    previous_template = model.templates.templates.get(name)
    dsn = model.add_domain(name, template, spec)  # the one DSN built; refuses a name that already has one
    try:
        dsn.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        model.drop_dsn(name)  # the model as it was: no DSN with random weights
        if previous_template is not None:
            model.templates.templates[name] = previous_template
        raise ArtifactError(f"DSN weights {weights} do not fit the core's DSN architecture: {exc}") from None
    dsn.eval()
    return name
