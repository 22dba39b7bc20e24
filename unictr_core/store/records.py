"""The YAML records of a home (core manifest, ``domain.yaml``) read and checked without loading a model.

Nothing here imports torch: listing a home (``unictr domain list``) verifies every bundle with these
functions alone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from unictr_core.config import ModelConfig
from unictr_core.data import yaml_io
from unictr_core.data.files import file_sha256
from unictr_core.store.layout import CORE_WEIGHTS, DOMAIN_FILE, DSN_WEIGHTS, FORMAT_VERSION, MANIFEST, ArtifactError
from unictr_core.store.tensors import check_layout, check_weights, read_header

MAPPING, TEXT, NUMBER, TEXTS = "a mapping", "text", "a number", "a list of text"
# the optional parts of a DSN that change its tensors (see unictr_core.modeling.networks.DsnSpec); ``residual``
# changes none. A bundle's ``dsn:`` record holds each of DSN_KEYS, true or false
DSN_PARTS = ("stats", "calibration")
DSN_KEYS = ("residual", *DSN_PARTS)
# the typed schema of each record: key -> (what it must be, required); other keys are free
MANIFEST_SCHEMA = {"fingerprint": (TEXT, True), "core_sha256": (TEXT, True), "architecture": (MAPPING, True),
                   "lora_targets": (TEXTS, True), "default_template": (MAPPING, True), "backbone": (MAPPING, True),
                   "dsn_layout": (MAPPING, True), "training": (MAPPING, False), "created": (TEXT, False)}
BACKBONE_SCHEMA = {"reference": (TEXT, True), "weights_sha256": (TEXT, True)}
DOMAIN_SCHEMA = {"name": (TEXT, True), "core_fingerprint": (TEXT, True), "dsn_sha256": (TEXT, True),
                 "template": (MAPPING, False), "dsn": (MAPPING, True), "metrics": (MAPPING, False),
                 "training": (MAPPING, False), "description": (TEXT, False), "created": (TEXT, False)}


def read_yaml_record(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping of the current ``format_version``; ArtifactError (naming ``what`` and ``path``) otherwise.

    Read with the hardened reader (:mod:`unictr_core.data.yaml_io`: size, UTF-8, no aliases, depth); dates
    YAML would parse as timestamps are kept as text, and non-finite numbers (``.nan``, ``.inf``) become ``null``,
    so nothing read from a record can put NaN into a JSON output.
    """
    data = yaml_io.read_file(path, what, ArtifactError)
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{what} {path}: unsupported format (expected format_version {FORMAT_VERSION})")
    return _plain(data)


def _plain(value: Any) -> Any:
    """``value`` with dates as ISO text and non-finite floats as None (recursive: yaml_io bounds the depth)."""
    if isinstance(value, dict):
        return {key if isinstance(key, str) else str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fits(value: Any, kind: str) -> bool:
    if kind == MAPPING:
        return isinstance(value, dict)
    if kind == TEXT:
        return isinstance(value, str)
    if kind == TEXTS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_schema(data: dict[str, Any], schema: dict[str, tuple[str, bool]], path: Path, what: str,
                 prefix: str = "") -> dict[str, Any]:
    """``data`` when every key of ``schema`` is present (if required) and of its type; else one ArtifactError
    naming the file and the first wrong field."""
    missing = [key for key, (_, required) in schema.items() if required and data.get(key) is None]
    if missing:
        raise ArtifactError(f"{what} {path} lacks {', '.join(repr(prefix + k) for k in missing)} "
                            "(tampered or truncated?)")
    for key, (kind, _) in schema.items():
        if data.get(key) is not None and not _fits(data[key], kind):
            raise ArtifactError(f"{what} {path}, field '{prefix}{key}': expected {kind}, got "
                                f"{type(data[key]).__name__} {_short(data[key])}")
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fingerprint_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def core_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a core's fingerprint is the hash of: backbone weights, architecture, LoRA targets, default template
    and the SHA-256 of the core's weights."""
    return {"format_version": FORMAT_VERSION, "backbone_sha256": manifest["backbone"]["weights_sha256"],
            "architecture": manifest["architecture"], "lora_targets": manifest["lora_targets"],
            "default_template": manifest["default_template"], "core_sha256": manifest["core_sha256"]}


def read_manifest(core_dir: Path) -> dict[str, Any]:
    """The core manifest, type-checked, whose fingerprint is recomputed from what it records (a manifest edited
    to pass off other weights or another architecture under a known fingerprint is refused)."""
    path = Path(core_dir) / MANIFEST
    manifest = check_schema(read_yaml_record(path, "core manifest"), MANIFEST_SCHEMA, path, "core manifest")
    check_schema(manifest["backbone"], BACKBONE_SCHEMA, path, "core manifest", "backbone.")
    try:
        ModelConfig.from_dict(manifest["architecture"])
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"core manifest {path}, field 'architecture': {exc}") from None
    if not all(
            isinstance(layout, dict) and all(isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                                             for shape in layout.values())
            for layout in manifest["dsn_layout"].values()):
        raise ArtifactError(f"core manifest {path}, field 'dsn_layout': expected a mapping of DSN kinds to mappings "
                            "of tensor names to shapes (lists of sizes)")
    if fingerprint_of(core_identity(manifest)) != manifest["fingerprint"]:
        raise ArtifactError(f"core manifest {path}: its fingerprint does not match the core it describes (the "
                            "manifest or its core_sha256 was edited); retrain the core with `unictr train`")
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


def verify_core_files(core_dir: Path) -> dict[str, Any]:
    """The manifest of a core whose files pass every check that needs no model: the typed manifest, its
    recomputed fingerprint, the SHA-256 of its weights and their header and values (finite floats)."""
    manifest = read_manifest(core_dir)
    weights = verified_weights(Path(core_dir) / CORE_WEIGHTS, manifest["core_sha256"], "core weights")
    check_weights(weights, "core weights")
    return manifest


def read_domain_record(bundle_dir: Path) -> dict[str, Any]:
    """The type-checked ``domain.yaml`` of a bundle; ArtifactError (one line) otherwise."""
    path = Path(bundle_dir) / DOMAIN_FILE
    record = check_schema(read_yaml_record(path, "domain bundle"), DOMAIN_SCHEMA, path, "domain bundle")
    dsn = record["dsn"]
    if set(dsn) != set(DSN_KEYS) or not all(isinstance(value, bool) for value in dsn.values()):
        raise ArtifactError(f"domain bundle {path}, field 'dsn': expected true or false for each of "
                            f"{', '.join(DSN_KEYS)}, got {_short(dsn)}")
    history = (record.get("training") or {}).get("history")
    if history is not None and not (isinstance(history, list) and all(_is_epoch(r) for r in history)):
        raise ArtifactError(f"domain bundle {path}, field 'training.history': expected a list of epochs (mappings "
                            "with an integer 'epoch' and numbers)")
    return record


def _is_epoch(record: Any) -> bool:
    return (isinstance(record, dict) and type(record.get("epoch")) is int
            and all(value is None or _fits(value, NUMBER) for value in record.values()))


def verify_domain_bundle(bundle_dir: Path, layout: Optional[dict[str, list[int]]] = None) -> dict[str, Any]:
    """The record of a bundle that passes every check that needs no model; else ArtifactError.

    A real directory (not a symbolic link), a complete and well-typed ``domain.yaml``, and a
    ``dsn.safetensors`` whose SHA-256 matches the record, whose header is sound and whose tensors are all
    finite floats; with ``layout`` (the DSN layout the core manifest records) exactly its tensor names and
    shapes. ``domain list`` runs it, so a bundle it shows ``ready`` is one that loads.
    """
    bundle_dir = Path(bundle_dir)
    if bundle_dir.is_symlink():
        raise ArtifactError(f"domain bundle {bundle_dir} is a symbolic link (to {os.readlink(bundle_dir)}); "
                            "refused: bundles must be real directories inside the home")
    record = read_domain_record(bundle_dir)
    weights = verified_weights(bundle_dir / DSN_WEIGHTS, record["dsn_sha256"], "DSN weights")
    check_weights(weights, "DSN weights", layout)
    return record


def dsn_kind(spec: dict) -> str:
    """The key of a DSN's layout in the core manifest for its ``dsn:`` record: ``base``, ``stats``,
    ``calibration`` or ``stats+calibration``."""
    return "+".join(part for part in DSN_PARTS if spec[part]) or "base"


def check_dsn_layout(bundle_dir: Path, layouts: dict[str, dict[str, list[int]]], spec: dict) -> None:
    """ArtifactError unless the DSN weights of ``bundle_dir`` have exactly the tensors of the layout the core
    manifest records for its kind of DSN (``spec``: the bundle's ``dsn:`` record), each with its shape; reads
    only the header."""
    weights = Path(bundle_dir) / DSN_WEIGHTS
    kind = dsn_kind(spec)
    if kind not in layouts:
        raise ArtifactError(f"DSN weights {weights}: a DSN of kind '{kind}', which the core does not describe "
                            f"(it knows {', '.join(sorted(layouts))})")
    check_layout(read_header(weights, "DSN weights")[0], layouts[kind], weights, "DSN weights")
