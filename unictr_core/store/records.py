"""The YAML records of a home (core manifest, ``domain.yaml``) read and checked without loading a model.

Nothing here imports torch: listing a home (``unictr domain list``) verifies every bundle with these
functions alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from unictr_core.data import yaml_io
from unictr_core.data.files import file_sha256
from unictr_core.store.layout import DOMAIN_FILE, DSN_WEIGHTS, FORMAT_VERSION, MANIFEST, ArtifactError

CORE_KEYS = ("fingerprint", "core_sha256", "architecture", "lora_targets", "default_template", "backbone")
DOMAIN_KEYS = ("name", "core_fingerprint", "dsn_sha256")


def read_yaml_record(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping of the current ``format_version``; ArtifactError (naming ``what`` and ``path``) otherwise."""
    data = yaml_io.read_file(path, what, ArtifactError)
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{what} {path}: unsupported format (expected format_version {FORMAT_VERSION})")
    return data


def fingerprint_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _require_keys(data: dict[str, Any], keys: tuple[str, ...], path: Path, what: str) -> dict[str, Any]:
    missing = [key for key in keys if data.get(key) is None]
    if missing:
        raise ArtifactError(f"{what} {path} lacks {', '.join(repr(k) for k in missing)} (tampered or truncated?)")
    return data


def read_manifest(core_dir: Path) -> dict[str, Any]:
    path = Path(core_dir) / MANIFEST
    manifest = _require_keys(read_yaml_record(path, "core manifest"), CORE_KEYS, path, "core manifest")
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


def read_domain_record(bundle_dir: Path) -> dict[str, Any]:
    return read_yaml_record(Path(bundle_dir) / DOMAIN_FILE, "domain bundle")


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
    check_safetensors_header(weights, "DSN weights")
    return record


def check_safetensors_header(path: Path, what: str) -> None:
    """ArtifactError unless ``path`` starts with a valid safetensors header (read without torch)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{what} {path} are not a valid safetensors file: {exc}") from None
