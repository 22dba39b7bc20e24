"""Never a silent wrong model, inputs that never crash, symlinks refused, hostile plugins contained (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import toy_samples
from test_plugins import FakeEntryPoint, fake_plugin_module, installed
from unictr_cli.main import app
from unictr_core import plugins
from unictr_core.data.files import file_sha256
from unictr_core.modeling.backbone import BackboneError, load_backbone
from unictr_core.data.data_io import read_samples, validate_domain_name, write_samples
from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import DomainSpec
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry
from unictr_core.data.schema import DataError
from unictr_core.store.records import core_identity, fingerprint_of

runner = CliRunner()


def bundle_of(home: Path, name: str) -> Path:
    return Registry.open(home).get(name).bundle


def reseal(bundle: Path, weights: bytes) -> None:
    """Replace the DSN weights and record their SHA-256, as a tamperer who knows the format would."""
    (bundle / "dsn.safetensors").unlink()
    (bundle / "dsn.safetensors").write_bytes(weights)
    record_path = bundle / "domain.yaml"
    record = yaml.safe_load(record_path.read_text())
    record["dsn_sha256"] = file_sha256(bundle / "dsn.safetensors")
    record_path.unlink()
    record_path.write_text(yaml.safe_dump(record))


def assert_broken_and_zero_shot(home: Path, name: str, reason: str) -> None:
    entry = Registry.open(home).get(name)
    assert entry.status == "broken" and reason in entry.problem
    listing = runner.invoke(app, ["domain", "list", "--home", str(home)])
    assert listing.exit_code == 0 and listing.exception is None
    assert any(line.startswith(name) and "broken" in line for line in listing.output.splitlines())
    model, notes = load_model(home)
    assert name not in model.dsns and any(name in n and "zero-shot" in n for n in notes)
    preds = predict_samples(model, toy_samples(6, domains=(name,)))
    assert preds.zero_shot.all()


@pytest.mark.parametrize("weights", [b"not a safetensors file at all", b"\x10\x00\x00\x00\x00\x00\x00\x00{"],
                         ids=["garbage", "truncated"])
def test_a_tampered_dsn_with_a_matching_sha_falls_back_to_zero_shot(home, weights):
    reseal(bundle_of(home, "books"), weights)
    assert_broken_and_zero_shot(home, "books", "not a valid safetensors file")


def test_a_dsn_of_the_wrong_shape_is_never_attached_with_random_weights(home):
    from safetensors.torch import save_file
    import torch

    bundle = bundle_of(home, "movies")
    save_file({"weight": torch.zeros(3)}, str(bundle.parent / "other.safetensors"))
    reseal(bundle, (bundle.parent / "other.safetensors").read_bytes())
    (bundle.parent / "other.safetensors").unlink()
    # the core manifest records the DSN layout: `domain list` tells it does not fit, without torch (issue 22)
    assert_broken_and_zero_shot(home, "movies", "do not fit the core's architecture")


def test_missing_sha_and_wrong_sha_are_broken_not_tracebacks(home):
    record_path = bundle_of(home, "music") / "domain.yaml"
    record = yaml.safe_load(record_path.read_text())
    del record["dsn_sha256"]
    record_path.unlink()
    record_path.write_text(yaml.safe_dump(record))
    assert_broken_and_zero_shot(home, "music", "'dsn_sha256'")
    weights = bundle_of(home, "books") / "dsn.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.unlink()
    weights.write_bytes(bytes(data))
    assert_broken_and_zero_shot(home, "books", "SHA-256")


def test_a_pickle_backbone_is_refused_before_anything_is_loaded(tiny_bert, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle payload that must never be unpickled")
    with pytest.raises(BackboneError, match="safetensors only"):
        load_backbone(str(folder))


def test_a_core_whose_backbone_changed_is_refused_before_loading(home, tiny_bert, tmp_path, monkeypatch):
    from unictr_core.modeling import backbone

    manifest_path = Path(os.path.realpath(home / "core" / "manifest.yaml"))
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["backbone"]["weights_sha256"] = "f" * 64
    manifest["fingerprint"] = fingerprint_of(core_identity(manifest))  # resealed: else refused for that already
    manifest_path.unlink()
    manifest_path.write_text(yaml.safe_dump(manifest))
    monkeypatch.setattr(backbone.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights were loaded"))
    result = runner.invoke(app, ["predict", "--home", str(home), "--input", str(write_rows(tmp_path, [ROW]))])
    assert result.exit_code == 1 and "exact backbone" in result.output and "Traceback" not in result.output


def test_a_symlinked_bundle_is_refused_and_remove_deletes_the_link(home, tmp_path):
    outside = tmp_path / "outside" / "toys"
    shutil.copytree(bundle_of(home, "books"), outside)
    record = yaml.safe_load((outside / "domain.yaml").read_text())
    record["name"] = "toys"
    (outside / "domain.yaml").write_text(yaml.safe_dump(record))
    link = Path(os.path.realpath(home / "domains")) / "toys"
    link.symlink_to(outside, target_is_directory=True)
    entry = Registry.open(home).get("toys")
    assert entry.source == "local" and entry.status == "broken" and "symbolic link" in entry.problem
    model, notes = load_model(home)
    assert "toys" not in model.dsns
    result = runner.invoke(app, ["domain", "remove", "toys", "--yes", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert Registry.open(home).get("toys") is None and outside.is_dir()
    assert not any(p.name.startswith("toys") or ".toys" in p.name for p in (home / "domains").iterdir())


# ----------------------------------------------------------------------------- inputs
ROW = {"domain": "books", "user_id": "u1", "item_id": "i1", "label": 1, "title": "a title"}


def write_rows(folder: Path, rows: list, name: str = "rows.jsonl") -> Path:
    path = folder / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("line, field, message", [
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "title": "\\ud800"}', "title", "lone surrogate"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "history": ["ok", "\\udfff x"]}', "history",
     "lone surrogate"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "price": NaN}', None, "NaN"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "price": -Infinity}', None, "Infinity"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "price": "inf"}', "price", "finite price"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "x": ' + "[" * 100000 + "]" * 100000 + "}", None,
     "nested too deeply"),
    ('{"domain": "books", "user_id": "u1", "item_id": "i1", "x": ' + "[" * 40 + "]" * 40 + "}", "x",
     "nested deeper"),
])
def test_hostile_values_give_one_line_errors(tmp_path, line, field, message):
    path = write_rows(tmp_path, [ROW, line])
    with pytest.raises(DataError, match=message) as info:
        read_samples(path)
    assert info.value.line == 2 and info.value.field == field


def test_cli_reports_hostile_rows_and_empty_files_without_traceback(home, tmp_path):
    bad = write_rows(tmp_path, ['{"domain": "books", "user_id": "u1", "item_id": "i1", "title": "\\ud800"}'])
    result = runner.invoke(app, ["predict", "--home", str(home), "--input", str(bad)])
    assert result.exit_code == 1 and "line 1, field 'title'" in result.output and result.exception.__class__ \
        is SystemExit
    empty = tmp_path / "empty.csv"
    empty.write_text("domain,user_id,item_id,label\n")
    for command in (["evaluate", "--data", str(empty)], ["predict", "--input", str(empty)]):
        result = runner.invoke(app, [*command, "--home", str(home)])
        assert result.exit_code == 1 and "no samples" in result.output, result.output


def test_domain_names_must_match_in_full(home, tmp_path):
    with pytest.raises(DataError):
        validate_domain_name("bg\n")
    rows = tmp_path / "bg.jsonl"
    write_samples(rows, toy_samples(20, domains=("bg",)))
    result = runner.invoke(app, ["domain", "add", "bg\n", "--data", str(rows), "--home", str(home)])
    assert result.exit_code == 1 and "domain name" in result.output
    assert not any("\n" in p.name for p in Path(os.path.realpath(home / "domains")).iterdir())


# ----------------------------------------------------------------------------- plugins
def exiting_plugin():
    raise SystemExit(3)


def interrupting_plugin():
    raise KeyboardInterrupt


class RaisingHooks:
    @hookimpl
    def register_domains(self, register):
        raise RuntimeError("hook exploded")


class GarbageHooks:
    @hookimpl
    def register_backbones(self, register):
        register("not a spec", 42)


@pytest.fixture
def hostile_plugins(monkeypatch):
    good = fake_plugin_module("garden_plugin", "garden_tools")
    yield from installed(monkeypatch, [FakeEntryPoint("exiting_plugin", exiting_plugin, "unictr-exit"),
                                       FakeEntryPoint("interrupting_plugin", interrupting_plugin, "unictr-interrupt"),
                                       FakeEntryPoint("raising_hooks", RaisingHooks, "unictr-raising"),
                                       FakeEntryPoint("garbage_hooks", GarbageHooks, "unictr-garbage"),
                                       FakeEntryPoint("garden_plugin", lambda: good, "unictr-garden")])


def test_hostile_plugins_are_listed_broken_and_the_others_work(hostile_plugins, tmp_path):
    result = runner.invoke(app, ["plugins", "--json", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert "SystemExit" in rows["exiting_plugin"]["error"]
    assert "KeyboardInterrupt raised by the plugin itself" in rows["interrupting_plugin"]["error"]
    assert "register_domains: RuntimeError: hook exploded" in rows["raising_hooks"]["error"]
    assert "register_backbones must call register(BackboneSpec" in rows["garbage_hooks"]["error"]
    assert rows["garden_plugin"]["error"] is None
    assert len([r for r in json.loads(result.stdout) if r["name"] == "raising_hooks"]) == 1
    listing = runner.invoke(app, ["domain", "list", "--home", str(tmp_path)])
    assert listing.exit_code == 0 and "garden_tools" in listing.output


def test_a_users_ctrl_c_still_interrupts_plugin_loading(monkeypatch):
    import signal

    def pressed():
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("not reached: SIGINT raises KeyboardInterrupt")

    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEntryPoint("slow", pressed, "slow")])
    try:
        with pytest.raises(KeyboardInterrupt):
            plugins.get_plugin_manager(reload=True)
    finally:
        monkeypatch.undo()
        plugins.get_plugin_manager(reload=True)


# ----------------------------------------------------------------------------- reports that cannot mislead
def test_rela_impr_only_against_a_reference_above_chance():
    from unictr_core.metrics import rela_impr, rela_impr_note

    assert rela_impr(0.6, 0.55) == pytest.approx(100.0)
    assert rela_impr(0.45, 0.4) is None and "not above 0.5" in rela_impr_note(0.4)  # was +50.00%
    assert rela_impr(0.7, 0.5) is None and rela_impr(0.7, None) is None


def test_evaluation_table_labels_the_pooled_auc_and_shows_the_mean_of_domains():
    import numpy as np

    from unictr_core.modeling.predict import Predictions
    from unictr_core.fit.report import evaluation_report, evaluation_table
    from unictr_core.data.schema import Sample

    # two domains, each ranked at chance inside, but with different positive rates: pooled AUC looks good
    samples, probs = [], []
    for domain, rate, score in (("a", 0.2, 0.1), ("b", 0.8, 0.9)):
        for i in range(10):
            samples.append(Sample(domain=domain, user_id="u", item_id=str(i), label=int(i < rate * 10)))
            probs.append(score)
    probs = np.array(probs)
    report = evaluation_report(samples, Predictions(probs, 1 - probs, np.zeros(20, dtype=bool)))
    assert report["overall_auc"] > 0.75 and report["mean_domain_auc"] == pytest.approx(0.5)
    table = evaluation_table(report)
    assert "overall (pooled)" in table and "mean of domains" in table and "RelaImpr n/a for a" in table
    assert report["domains"]["a"]["rela_impr"] is None and "not above 0.5" in report["domains"]["a"]["rela_impr_note"]


def test_domain_add_prints_and_stores_one_line_per_epoch_and_refuses_a_useless_standalone_dsn(home, tmp_path):
    rows = tmp_path / "toys.jsonl"
    write_samples(rows, toy_samples(60, seed=5, domains=("toys",)))
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(rows), "--home", str(home), "--epochs", "2",
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "epoch 0: train loss n/a, valid AUC" in result.output and "epoch 2: train loss " in result.output
    shown = runner.invoke(app, ["domain", "show", "toys", "--home", str(home)])
    assert "metric zero_shot_logloss: " in shown.output and "training history (best epoch" in shown.output
    as_json = json.loads(runner.invoke(app, ["domain", "show", "toys", "--home", str(home), "--json"]).output)
    history = as_json["training"]["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2] and all("valid_logloss" in r for r in history)
    # a standalone DSN trained with a zero learning rate never moves, so no epoch can beat its start
    pets = tmp_path / "pets.jsonl"
    write_samples(pets, toy_samples(60, seed=6, domains=("pets",)))
    result = runner.invoke(app, ["domain", "add", "pets", "--data", str(pets), "--home", str(home), "--epochs", "1",
                                 "--standalone", "--lr", "0"])
    assert result.exit_code == 1 and "never beat its untrained (random) start" in result.output
    assert Registry.open(home).get("pets") is None


def test_train_prints_and_stores_one_line_per_epoch(home, tiny_bert, tmp_path):
    from unictr_core.store.records import read_manifest

    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--home", str(home), "--backbone", tiny_bert,
                                 "--epochs", "2", "--max-steps", "2", "--tower", "16,8", "--max-length", "64",
                                 "--threads", "1", "--replace"])
    assert result.exit_code == 0, result.output
    assert "epoch 1: train loss " in result.output and "valid logloss" in result.output
    manifest = read_manifest(Path(os.path.realpath(home / "core")))
    assert [r["epoch"] for r in manifest["training"]["history"]] == [1]  # --max-steps 2 ends in epoch 1
    books = Registry.open(home).get("books").training["history"][0]
    assert set(books) == {"epoch", "train_loss", "valid_auc", "valid_logloss", "seconds"}


def test_atomic_directory_restores_a_folder_left_between_its_two_renames(tmp_path):
    from unictr_core.data.files import atomic_directory

    target = tmp_path / "ds"
    target.mkdir()
    (target / "a.txt").write_text("old")
    os.replace(target, tmp_path / ".ds.old-12345")  # killed right after the first rename
    with pytest.raises(RuntimeError):
        with atomic_directory(target):
            raise RuntimeError("this write fails too")
    assert (target / "a.txt").read_text() == "old" and not list(tmp_path.glob(".ds.*"))
