"""The core artifact and domain bundles: safetensors + YAML, written atomically, no pickle.

Layout of a UniCTR home (``--home`` / ``UNICTR_HOME``)::

    home/
      core/
        manifest.yaml       format version, backbone reference + SHA-256 of its weights, tokenizer,
                            architecture, default prompt template, fingerprint of the core
        core.safetensors    LoRA weights + general network
      domains/
        <name>/
          domain.yaml       name, prompt template, core fingerprint it was trained against, metrics
          dsn.safetensors   the domain's DSN weights

Every write goes to a temporary directory beside the target and is renamed into
place, so a crash leaves the previous artifact intact.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from safetensors.torch import load_file, save_file

from unictr_core import __version__
from unictr_core.atomic import atomic_directory
from unictr_core.backbone import load_backbone
from unictr_core.config import ModelConfig
from unictr_core.model import UniCTRModel
from unictr_core.prompts import PromptTemplate, TemplateSet

FORMAT_VERSION = 1
CORE_DIR = "core"
DOMAINS_DIR = "domains"
MANIFEST = "manifest.yaml"
CORE_WEIGHTS = "core.safetensors"
DOMAIN_FILE = "domain.yaml"
DSN_WEIGHTS = "dsn.safetensors"
HOME_ENV = "UNICTR_HOME"


class ArtifactError(RuntimeError):
    pass


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, "unictr-home")).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ArtifactError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{what} {path}: unsupported format (expected format_version {FORMAT_VERSION})")
    return data


# --------------------------------------------------------------------------- core
def fingerprint_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def save_core(model: UniCTRModel, core_dir: Path, training: Optional[dict] = None) -> str:
    """Write the core (manifest + LoRA and general-network weights); returns its fingerprint."""
    info = model.backbone_info
    with atomic_directory(Path(core_dir)) as staging:
        save_file(_contiguous(model.core_state()), str(staging / CORE_WEIGHTS), metadata={"format": "unictr-core"})
        core_sha = file_sha256(staging / CORE_WEIGHTS)
        identity = {
            "format_version": FORMAT_VERSION,
            "backbone_sha256": info.weights_sha256,
            "architecture": model.config.to_dict(),
            "lora_targets": model.lora_targets,
            "default_template": model.templates.default.to_dict(),
            "core_sha256": core_sha,
        }
        fingerprint = fingerprint_of(identity)
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
            "training": training or {},
        }
        (staging / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return fingerprint


def read_manifest(core_dir: Path) -> dict[str, Any]:
    return _read_yaml(Path(core_dir) / MANIFEST, "core manifest")


def load_core(core_dir: Path) -> UniCTRModel:
    """The frozen core as a model with no DSN; verifies backbone and core weights against the manifest."""
    core_dir = Path(core_dir)
    manifest = read_manifest(core_dir)
    weights = core_dir / CORE_WEIGHTS
    if not weights.exists():
        raise ArtifactError(f"core weights missing: {weights}")
    if file_sha256(weights) != manifest["core_sha256"]:
        raise ArtifactError(f"core weights {weights} do not match the SHA-256 in the manifest (corrupted file?)")
    config = ModelConfig.from_dict(manifest["architecture"])
    backbone = load_backbone(manifest["backbone"]["reference"])
    expected = manifest["backbone"]["weights_sha256"]
    if backbone.weights_sha256 != expected:
        raise ArtifactError(
            f"backbone '{backbone.reference}' at {backbone.directory} has weights SHA-256 "
            f"{backbone.weights_sha256[:12]}…, but this core was trained on {expected[:12]}…: "
            "the core only works with the exact backbone it was trained on"
        )
    templates = TemplateSet(default=PromptTemplate.from_dict(manifest["default_template"], source=str(weights)))
    config.lora_targets = manifest["lora_targets"]
    model = UniCTRModel(backbone, config, (), templates)
    model.load_core_state(load_file(str(weights)))
    model.core_fingerprint = manifest["fingerprint"]
    model.eval()
    return model


# --------------------------------------------------------------------------- domain bundles
def save_domain_bundle(model: UniCTRModel, domain: str, bundle_dir: Path, core_fingerprint: str,
                       metrics: Optional[dict] = None, extra: Optional[dict] = None) -> None:
    bundle_dir = Path(bundle_dir)
    with atomic_directory(bundle_dir) as staging:
        save_file(_contiguous(model.dsns[domain].state_dict()), str(staging / DSN_WEIGHTS),
                  metadata={"format": "unictr-dsn", "domain": domain})
        template = model.templates.templates.get(domain)
        record = {
            "format_version": FORMAT_VERSION,
            "kind": "unictr-domain",
            "name": domain,
            "created": _now(),
            "core_fingerprint": core_fingerprint,
            "dsn_sha256": file_sha256(staging / DSN_WEIGHTS),
            "dsn": {"residual": bool(model.dsns[domain].residual)},
            "template": template.to_dict() if template is not None else None,
            "metrics": metrics or {},
        }
        record.update(extra or {})
        (staging / DOMAIN_FILE).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")


def read_domain_record(bundle_dir: Path) -> dict[str, Any]:
    return _read_yaml(Path(bundle_dir) / DOMAIN_FILE, "domain bundle")


def load_domain_bundle(model: UniCTRModel, bundle_dir: Path) -> str:
    """Attach the DSN in ``bundle_dir`` to ``model``; refuses a bundle trained against another core."""
    bundle_dir = Path(bundle_dir)
    record = read_domain_record(bundle_dir)
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
    if file_sha256(weights) != record["dsn_sha256"]:
        raise ArtifactError(f"DSN weights {weights} do not match the SHA-256 in {DOMAIN_FILE} (corrupted file?)")
    template = PromptTemplate.from_dict(record["template"], source=str(bundle_dir)) if record["template"] else None
    # bundles written before residual DSNs have no "dsn" entry: they are standalone
    residual = bool((record.get("dsn") or {}).get("residual", False))
    dsn = model.add_domain(name, template, residual=residual)
    dsn.load_state_dict(load_file(str(weights)), strict=True)
    dsn.eval()
    return name


# --------------------------------------------------------------------------- a whole home
def save_trained(model: UniCTRModel, home: Path, training: Optional[dict] = None,
                 domain_metrics: Optional[dict] = None) -> str:
    """Write the core and one bundle per trained domain into ``home``; returns the core fingerprint."""
    home = Path(home)
    fingerprint = save_core(model, home / CORE_DIR, training)
    for domain in model.domains:
        save_domain_bundle(model, domain, home / DOMAINS_DIR / domain, fingerprint,
                           (domain_metrics or {}).get(domain))
    model.core_fingerprint = fingerprint
    return fingerprint


def load_home(home: Path, domains: Optional[list[str]] = None) -> tuple[UniCTRModel, list[str]]:
    """The core of ``home`` with every compatible DSN the domain registry serves; returns (model, notes).

    Goes through :func:`unictr_core.registry.load_model`: local bundles and the
    bundles of installed domain packages; bundles of another core are skipped
    with a note (those domains are then predicted zero-shot).
    """
    from unictr_core.registry import load_model

    return load_model(home, domains)
