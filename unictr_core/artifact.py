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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unictr_core import __version__, home_store, yaml_io
from unictr_core.atomic import atomic_directory
from unictr_core.backbone import BackboneError, load_backbone
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
        data = yaml_io.safe_load(path.read_text(encoding="utf-8"))
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
        home_store.step("write core weights")
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
        home_store.step("write core manifest")
        (staging / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return fingerprint


CORE_KEYS = ("fingerprint", "core_sha256", "architecture", "lora_targets", "default_template", "backbone")
DOMAIN_KEYS = ("name", "core_fingerprint", "dsn_sha256")


def _require_keys(data: dict[str, Any], keys: tuple[str, ...], path: Path, what: str) -> dict[str, Any]:
    missing = [key for key in keys if data.get(key) is None]
    if missing:
        raise ArtifactError(f"{what} {path} lacks {', '.join(repr(k) for k in missing)} (tampered or truncated?)")
    return data


def read_manifest(core_dir: Path) -> dict[str, Any]:
    path = Path(core_dir) / MANIFEST
    manifest = _require_keys(_read_yaml(path, "core manifest"), CORE_KEYS, path, "core manifest")
    if not isinstance(manifest["backbone"], dict) or not manifest["backbone"].get("reference") \
            or not manifest["backbone"].get("weights_sha256"):
        raise ArtifactError(f"core manifest {path}: 'backbone' needs 'reference' and 'weights_sha256'")
    return manifest


def verified_weights(path: Path, expected_sha256: Any, what: str) -> Path:
    """``path`` when it is a regular safetensors file whose SHA-256 is ``expected_sha256``; else ArtifactError.

    Checked before any weight is read, so a tampered or truncated file is never loaded.
    """
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(f"{what} {path} is missing or not a regular file")
    if file_sha256(path) != expected_sha256:
        raise ArtifactError(f"{what} {path} do not match the SHA-256 recorded beside them (corrupted or "
                            "tampered file)")
    return path


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a file that is not one gives ArtifactError, not a traceback."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{what} {path} is not a valid safetensors file: {exc}") from None


def load_core(core_dir: Path) -> UniCTRModel:
    """The frozen core as a model with no DSN; verifies backbone and core weights against the manifest."""
    core_dir = Path(core_dir)
    manifest = read_manifest(core_dir)
    weights = verified_weights(core_dir / CORE_WEIGHTS, manifest["core_sha256"], "core weights")
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
        home_store.step(f"write {domain}/{DSN_WEIGHTS}")
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
        home_store.step(f"write {domain}/{DOMAIN_FILE}")
        (staging / DOMAIN_FILE).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")


def read_domain_record(bundle_dir: Path) -> dict[str, Any]:
    return _read_yaml(Path(bundle_dir) / DOMAIN_FILE, "domain bundle")


def verify_domain_bundle(bundle_dir: Path) -> dict[str, Any]:
    """The record of a bundle that passes every check that needs no model; else ArtifactError.

    A real directory (not a symbolic link), a complete ``domain.yaml``, and a
    ``dsn.safetensors`` whose SHA-256 matches the record and whose header is a
    valid safetensors header. ``domain list`` runs it, so a bundle it shows
    ``ready`` is one that loads.
    """
    bundle_dir = Path(bundle_dir)
    if bundle_dir.is_symlink():
        raise ArtifactError(f"domain bundle {bundle_dir} is a symbolic link (to {os.readlink(bundle_dir)}); "
                            "refused: bundles must be real directories inside the home")
    path = bundle_dir / DOMAIN_FILE
    record = _require_keys(read_domain_record(bundle_dir), DOMAIN_KEYS, path, "domain bundle")
    weights = verified_weights(bundle_dir / DSN_WEIGHTS, record["dsn_sha256"], "DSN weights")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"DSN weights {weights} are not a valid safetensors file: {exc}") from None
    return record


def load_domain_bundle(model: UniCTRModel, bundle_dir: Path) -> str:
    """Attach the DSN in ``bundle_dir`` to ``model``; refuses a bundle trained against another core.

    Every check runs before the DSN is attached: a bundle that fails one leaves
    ``model`` unchanged (ArtifactError), never a DSN with random weights.
    """
    bundle_dir = Path(bundle_dir)
    record = verify_domain_bundle(bundle_dir)
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
    # bundles written before residual DSNs have no "dsn" entry: they are standalone
    residual = bool((record.get("dsn") or {}).get("residual", False))
    dsn = model.new_dsn(residual)
    try:
        dsn.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"DSN weights {weights} do not fit the core's DSN architecture: {exc}") from None
    dsn.eval()
    model.add_domain(name, template, residual=residual)
    model.dsns[name] = dsn
    return name


# --------------------------------------------------------------------------- a whole home
def save_trained(model: UniCTRModel, home: Path, training: Optional[dict] = None,
                 domain_metrics: Optional[dict] = None, domain_extra: Optional[dict] = None,
                 notes: Optional[list[str]] = None) -> str:
    """Write the core and one bundle per trained domain into ``home``; returns the core fingerprint.

    One snapshot switch (:mod:`unictr_core.home_store`): readers see the old core and
    bundles or the new ones, never a mix; other domains' bundles are kept.

    ``domain_extra`` maps a domain to extra fields of its ``domain.yaml`` (e.g. its training history).
    """
    with home_store.transaction(Path(home), notes=notes) as txn:  # all of it becomes current at once, or nothing does
        txn.remove(CORE_DIR)
        fingerprint = save_core(model, txn.root / CORE_DIR, training)
        for domain in model.domains:
            txn.remove(f"{DOMAINS_DIR}/{domain}")
            save_domain_bundle(model, domain, txn.root / DOMAINS_DIR / domain, fingerprint,
                               (domain_metrics or {}).get(domain), (domain_extra or {}).get(domain))
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
