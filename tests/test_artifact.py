"""Core artifact and domain bundles: round trip, fingerprints, atomic writes."""

from __future__ import annotations

import os

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import toy_samples
from unictr_core.store.layout import ArtifactError
from unictr_core.store.writes import save_trained
from unictr_core.store.loading import load_model
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.records import core_identity, fingerprint_of
from unictr_core.store import artifact  # the module that writes the files (its save_file is patched)
from unictr_core.fit.training import build_model, train_unictr


@pytest.fixture
def trained(tiny_config, fast_train_config):
    fast_train_config.max_steps = 3
    return train_unictr(toy_samples(60), toy_samples(30, seed=1), tiny_config, fast_train_config, progress=False)


def test_save_load_predict_is_identical(trained, tmp_path):
    save_trained(trained.model, tmp_path)
    samples = toy_samples(30, seed=5, domains=("books", "movies", "music", "toys"))
    before = predict_samples(trained.model, samples)
    loaded, notes = load_model(tmp_path)
    after = predict_samples(loaded, samples)
    assert notes == []
    assert sorted(loaded.domains) == ["books", "movies", "music"]
    np.testing.assert_array_equal(before.probs, after.probs)
    np.testing.assert_array_equal(before.general_probs, after.general_probs)
    assert after.zero_shot.tolist() == [s.domain == "toys" for s in samples]


def test_layout_has_no_pickle_and_records_the_backbone(trained, tmp_path):
    fingerprint = save_trained(trained.model, tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock")
    assert files == [f"generations/g000001/{f}" for f in ["core/core.safetensors", "core/manifest.yaml",
                     *[f"domains/{d}/{f}" for d in ("books", "movies", "music")
                       for f in ("domain.yaml", "dsn.safetensors")]]]
    assert os.readlink(tmp_path / "current") == "generations/g000001"  # the pointer; core/ and domains/ link to it
    manifest = yaml.safe_load((tmp_path / "core" / "manifest.yaml").read_text())
    assert manifest["fingerprint"] == fingerprint
    assert manifest["backbone"]["weights_sha256"] == trained.model.backbone_info.weights_sha256
    assert manifest["architecture"]["ladder_kind"] == "transformer"
    record = yaml.safe_load((tmp_path / "domains" / "books" / "domain.yaml").read_text())
    assert record["core_fingerprint"] == fingerprint


def test_bundle_from_another_core_is_refused(trained, tiny_config, tmp_path):
    save_trained(trained.model, tmp_path / "a")
    other = build_model(tiny_config, ["books"], seed=123)
    save_trained(other, tmp_path / "b")
    model = artifact.load_core(tmp_path / "a" / "core")
    with pytest.raises(ArtifactError, match="trained against core"):
        artifact.load_domain_bundle(model, tmp_path / "b" / "domains" / "books")
    # load_model skips the foreign bundle with a note instead of failing
    (tmp_path / "a" / "domains" / "books").rename(tmp_path / "a" / "domains" / "old_books")
    import shutil

    shutil.copytree(tmp_path / "b" / "domains" / "books", tmp_path / "a" / "domains" / "books")
    loaded, notes = load_model(tmp_path / "a")
    assert "books" not in loaded.domains and any("books" in n for n in notes)


def test_changed_backbone_is_refused(trained, tmp_path, tiny_bert):
    save_trained(trained.model, tmp_path)
    manifest_path = tmp_path / "core" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["backbone"]["weights_sha256"] = "0" * 64
    manifest_path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ArtifactError, match="fingerprint does not match"):  # an edited manifest (issue 22)
        artifact.load_core(tmp_path / "core")
    manifest["fingerprint"] = fingerprint_of(core_identity(manifest))  # resealed: the backbone check still holds
    manifest_path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ArtifactError, match="exact backbone"):
        artifact.load_core(tmp_path / "core")


def test_corrupted_weights_are_detected(trained, tmp_path):
    save_trained(trained.model, tmp_path)
    weights = tmp_path / "core" / "core.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        artifact.load_core(tmp_path / "core")


def test_crash_during_write_leaves_the_old_artifact(trained, tmp_path, monkeypatch):
    save_trained(trained.model, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    with torch.no_grad():
        next(trained.model.general.parameters()).add_(1.0)
    monkeypatch.setattr(artifact, "save_file", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        save_trained(trained.model, tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.rglob(".*tmp*")], "temporary directories left behind"
    assert not [p for p in tmp_path.rglob(".staging*")], "staging folders left behind"


def test_missing_home_gives_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="unictr train"):
        load_model(tmp_path / "nothing-here")
