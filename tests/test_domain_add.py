"""`unictr domain add` / `remove`: only the new DSN trains, nothing else changes, writes are atomic and locked."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core import artifact
from unictr_core.artifact import save_trained
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.data_io import write_samples
from unictr_core.domain_training import train_domain
from unictr_core.hidden_cache import build_cache
from unictr_core.predict import encode, predict_samples
from unictr_core.registry import Registry, RegistryError, load_model, registry_lock, remove_domain
from unictr_core.store import artifact as store_artifact
from unictr_core.training import train_unictr

runner = CliRunner()


def build_home(backbone: str, home: Path, seed: int = 0) -> Path:
    """A tiny trained core with DSNs for books, movies and music, saved as a UniCTR home."""
    config = ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64)
    train_config = TrainConfig(epochs=1, batch_size=16, head_lr=(1e-4, 3e-3), backbone_lr=(1e-4, 1e-3), max_steps=3,
                               seed=seed, dsn="standalone")   # the paper's joint DSNs, next to residual added ones
    result = train_unictr(toy_samples(60), toy_samples(30, seed=1), config, train_config, progress=False)
    save_trained(result.model, home, domain_metrics=result.valid_metrics)
    return home


@pytest.fixture(scope="module")
def trained_home(tiny_bert, tmp_path_factory) -> Path:
    return build_home(tiny_bert, tmp_path_factory.mktemp("home") / "home")


@pytest.fixture
def home(trained_home, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def toys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toys.jsonl"
    write_samples(path, toy_samples(80, seed=3, domains=("toys",)))
    return path


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def predict_per_domain(home: Path, samples, precision: str = "fp32") -> dict:
    """Predictions of each domain's rows, scored on their own (as a caller serving that domain would).

    Scored per domain so that each domain's batches hold the same rows before and after: mixed with other
    domains' rows, batch composition and padding change with their prompts, and float32 backbone arithmetic
    then differs in the last bit (padding independence itself is covered by the model tests, to 1e-5).
    """
    model, notes = load_model(home)
    assert notes == []
    out = {}
    for domain in sorted({s.domain for s in samples}):
        out[domain] = predict_samples(model, [s for s in samples if s.domain == domain], precision=precision)
    return out


def test_add_then_remove_leaves_every_other_domain_bit_identical(home, tmp_path):
    # enough validation rows (30) that a trained standalone DSN can beat its random start, which is scored too
    toys_file = tmp_path / "toys.jsonl"
    write_samples(toys_file, toy_samples(300, seed=3, domains=("toys",)))
    samples = toy_samples(90, seed=7, domains=("books", "movies", "music", "toys"))
    before = predict_per_domain(home, samples)
    before_bf16 = predict_per_domain(home, samples, "bf16")
    assert [d for d, p in before.items() if p.zero_shot.all()] == ["toys"]
    core_before = digests(home / "core")
    kept_before = {d: digests(home / "domains" / d) for d in ("books", "movies")}

    # standalone: a residual DSN may keep its untrained start (= the general network) after one epoch
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "3", "--standalone", "--lr", "1e-2"])
    assert result.exit_code == 0, result.output
    assert "domain 'toys' registered" in result.output and "general network (zero-shot)" in result.output
    assert "floor: user_rate (train part)" in result.output and "floor: item_rate (train part)" in result.output
    stored = Registry(home).get("toys").metrics
    assert 0 <= stored["user_rate_test_auc"] <= 1 and 0 <= stored["item_rate_test_auc"] <= 1
    result = runner.invoke(app, ["domain", "remove", "music", "--home", str(home), "--yes"])
    assert result.exit_code == 0, result.output

    after = predict_per_domain(home, samples)
    after_bf16 = predict_per_domain(home, samples, "bf16")
    for domain in ("books", "movies"):
        assert len(after[domain].probs) > 10 and not after[domain].zero_shot.any()
        np.testing.assert_array_equal(after[domain].probs, before[domain].probs)  # bit for bit
        np.testing.assert_array_equal(after[domain].general_probs, before[domain].general_probs)
        # the same guarantee in bf16 (autocast), whose predictions differ from fp32's
        np.testing.assert_array_equal(after_bf16[domain].probs, before_bf16[domain].probs)
        np.testing.assert_array_equal(after_bf16[domain].general_probs, before_bf16[domain].general_probs)
        assert not np.array_equal(after_bf16[domain].probs, after[domain].probs)
    assert after["music"].zero_shot.all()  # no DSN any more: the general network answers
    assert not after["toys"].zero_shot.any()
    np.testing.assert_array_equal(after["toys"].general_probs, before["toys"].general_probs)
    assert not np.array_equal(after["toys"].probs, before["toys"].probs)
    assert digests(home / "core") == core_before
    assert {d: digests(home / "domains" / d) for d in ("books", "movies")} == kept_before
    assert sorted(load_model(home)[0].domains) == ["books", "movies", "toys"]
    assert not (home / "domains" / "music").exists()
    leftovers = [p.name for p in (home / "domains").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not list((home / "generations").glob(".*"))
    record = Registry(home).get("toys")
    assert record.local and record.status == "ready"
    assert {"test_auc", "zero_shot_auc", "test_rows"} <= set(record.metrics)


@pytest.mark.parametrize("residual", [False, True])
def test_training_touches_only_the_new_dsn_and_cache_matches_live_backbone(home, residual):
    data = toy_samples(60, seed=11, domains=("toys",))
    train, valid, test = data[:40], data[40:50], data[50:]
    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=3)
    states, losses = {}, {}
    for cache in (True, False):
        model, _ = load_model(home)
        frozen = {k: v.clone() for k, v in model.state_dict().items()}
        result = train_domain(model, "toys", train, valid, test, config=config, cache=cache, progress=False,
                              residual=residual, cache_storage="fp32")  # fp32: comparable to 1e-5
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in frozen.items()), "a frozen weight changed"
        states[cache] = {k: v for k, v in after.items() if k.startswith("dsn")}
        losses[cache] = [h["train_loss"] for h in result.history]
        assert result.cache == cache and (result.cache_bytes > 0) == cache
        assert result.test["rows"] == 10 and result.test["general_auc"] is not None
        assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.history[0]["train_loss"] is None
    assert states[True].keys() == states[False].keys() and states[True]
    for key in states[True]:
        torch.testing.assert_close(states[True][key], states[False][key], atol=1e-5, rtol=1e-4)
    # the same training run either way (the weights kept may be the untrained start: compare the losses too)
    np.testing.assert_allclose(losses[True][1:], losses[False][1:], rtol=1e-4)
    assert losses[True][1] != losses[True][2]


def test_residual_dsn_starts_as_the_general_network_and_survives_a_round_trip(home, tmp_path):
    model, _ = load_model(home)
    dsn = model.add_domain("toys", spec=True)
    samples = toy_samples(24, seed=5, domains=("toys",))
    untrained = predict_samples(model, samples)
    assert not untrained.zero_shot.any()
    np.testing.assert_array_equal(untrained.probs, untrained.general_probs)  # exactly, before any training
    with torch.no_grad():
        for p in dsn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = predict_samples(model, samples)
    assert not np.allclose(moved.probs, moved.general_probs)
    artifact.save_domain_bundle(model, "toys", home / "domains" / "toys", model.core_fingerprint)
    assert artifact.read_domain_record(home / "domains" / "toys")["dsn"] == {"residual": True, "stats": False,
                                                                            "calibration": False}
    reloaded, notes = load_model(home)
    assert notes == [] and reloaded.dsns["toys"].residual and not reloaded.dsns["books"].residual
    np.testing.assert_array_equal(predict_samples(reloaded, samples).probs, moved.probs)


def test_residual_add_keeps_the_zero_shot_start_when_no_epoch_beats_it(home):
    model, _ = load_model(home)
    data = toy_samples(60, seed=11, domains=("toys",))
    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=3, head_lr=(0.0, 0.0))  # nothing can improve
    result = train_domain(model, "toys", data[:40], data[40:50], data[50:], config=config, progress=False)
    assert result.best_epoch == 0 and result.valid_auc == result.history[0]["valid_auc"]
    # the start is the general network; its calibration (fitted on validation) keeps the ranking
    assert result.test["auc"] == result.test["general_auc"]
    assert result.calibration["scale"] > 0 and result.calibration["valid_rows"] == 10


def test_cache_keeps_only_the_dsn_layers_unpadded(home, tmp_path):
    model, _ = load_model(home)
    encoded = encode(model, toy_samples(10, seed=2, domains=("toys",)))
    layers = model.dsns["books"].required_layers
    assert layers != list(range(model.num_layers + 1))
    cache = build_cache(model, encoded, layers, batch_size=4, storage="fp32")
    tokens = sum(len(ids) for ids in encoded.token_ids)
    assert cache.nbytes == tokens * len(layers) * model.hidden_size * 4  # unpadded
    hidden, mask = cache.batch([0, 1, 2])
    assert [i for i, h in enumerate(hidden) if h is not None] == layers
    batch = encoded.batch([0, 1, 2])
    with torch.no_grad():
        live = model.encode(batch.input_ids, batch.attention_mask)
    assert torch.equal(mask, batch.attention_mask.bool())
    for layer in layers:
        torch.testing.assert_close(hidden[layer][mask], live[layer][mask], atol=1e-5, rtol=1e-5)
    # fp16 storage: half the bytes, the values to fp16 rounding
    half = build_cache(model, encoded, layers, batch_size=4)
    assert half.storage == "fp16" and half.nbytes * 2 == cache.nbytes
    hidden16, _ = half.batch([0, 1, 2])
    for layer in layers:
        assert hidden16[layer].dtype == torch.float32
        torch.testing.assert_close(hidden16[layer][mask], live[layer][mask], atol=1e-2, rtol=1e-3)


def test_interrupted_add_registers_nothing(home, toys_file, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_artifact, "save_file", disk_full)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "1"])
    assert result.exit_code != 0
    assert Registry(home).get("toys") is None
    assert sorted(p.name for p in (home / "domains").iterdir()) == ["books", "movies", "music"]
    assert not list((home / "generations").glob(".*")), "the failed write left its staging folder behind"


def test_writers_are_serialised_by_the_lock(home):
    with registry_lock(home):
        with pytest.raises(RegistryError, match="locked by another"):
            remove_domain(home, "music", lock_timeout=0.3)
        assert (home / "domains" / "music").is_dir()
    remove_domain(home, "music", lock_timeout=0.3)
    assert not (home / "domains" / "music").exists()


def test_add_refuses_bad_names_duplicates_and_missing_rows(home, toys_file, tmp_path):
    result = runner.invoke(app, ["domain", "add", "../evil", "--data", str(toys_file), "--home", str(home)])
    assert result.exit_code == 1 and "expected a domain name matching" in result.output
    result = runner.invoke(app, ["domain", "add", "books", "--data", str(toys_file), "--home", str(home)])
    assert result.exit_code == 1 and "--replace" in result.output
    mixed = tmp_path / "mixed.jsonl"
    write_samples(mixed, toy_samples(20, domains=("books", "movies")))
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(mixed), "--home", str(home)])
    assert result.exit_code == 1 and "no rows of domain 'toys'" in result.output
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(tmp_path / "none")])
    assert result.exit_code == 1 and "unictr train" in result.output


def test_cli_and_api_train_the_same_dsn(home, toys_file, tmp_path):
    from safetensors.torch import load_file

    from unictr_core.artifact import CORE_DIR, load_core
    from unictr_core.domain_training import domain_splits

    api_home = tmp_path / "api-home"
    shutil.copytree(home, api_home, symlinks=True)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "3", "--seed", "1", "--lr", "0.03", "--no-stats"])
    assert result.exit_code == 0, result.output
    cli_weights = load_file(str(home / "domains" / "toys" / "dsn.safetensors"))

    model = load_core(api_home / CORE_DIR)
    train, valid, test, _ = domain_splits(toys_file, "toys", 1)
    config = TrainConfig(epochs=3, patience=5, head_lr=(0.03 / 100, 0.03), seed=1)  # improves on epoch 0
    api = train_domain(model, "toys", train, valid, test, config=config, progress=False, stats=False)
    assert api.best_epoch > 0 and f"best epoch {api.best_epoch} of 3" in result.output
    api_weights = model.dsns["toys"].state_dict()
    assert cli_weights.keys() == api_weights.keys()
    for key, value in cli_weights.items():
        assert torch.equal(value, api_weights[key]), key


def test_train_waits_for_the_registry_lock_and_writes_nothing_when_it_cannot_get_it(home, tiny_bert, tmp_path,
                                                                                   monkeypatch):
    from unictr_core.store import snapshots as home_store

    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    monkeypatch.setattr(home_store, "LOCK_TIMEOUT_S", 0.3)
    before = digests(home)
    digests_before_core = digests(home / "core")
    train = ["train", "--data", str(data), "--home", str(home), "--backbone", tiny_bert, "--epochs", "1",
             "--max-steps", "1", "--tower", "16,8", "--max-length", "64"]
    with registry_lock(home):  # e.g. a `domain add` committing its bundle
        result = runner.invoke(app, train)
    assert result.exit_code == 1 and "locked by another writer" in result.output
    lock = ".lock"  # holds the holder's pid
    assert {k: v for k, v in digests(home).items() if k != lock} == {k: v for k, v in before.items() if k != lock}
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    assert digests(home / "core")["core.safetensors"] != digests_before_core["core.safetensors"]
