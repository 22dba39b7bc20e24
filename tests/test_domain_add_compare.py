"""`unictr domain add --compare MODELS`: quick ID baselines on exactly the add's rows, reported and stored, never
changing what is registered."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core import DomainAddOptions, DomainData, workflows
from unictr_core.baselines import trainer
from unictr_core.config import TrainConfig
from unictr_core.data.data_io import write_samples
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model

runner = CliRunner()
CONFIG = TrainConfig(epochs=2, batch_size=16, patience=5)
QUIET = DomainAddOptions(progress=False)


@pytest.fixture
def toys(tmp_path):
    path = tmp_path / "toys.jsonl"
    write_samples(path, toy_samples(200, seed=3, domains=("toys",)))
    return path


def test_the_comparison_uses_exactly_the_adds_rows_and_leaves_the_bundle_bit_identical(home, toys, tmp_path,
                                                                                      monkeypatch):
    plain_home = tmp_path / "plain-home"
    shutil.copytree(home, plain_home, symlinks=True)
    seen = []
    fit = trainer.fit_baseline

    def recording(name, factory, train, valid, *args, **kwargs):
        seen.append((name, list(train), list(valid)))
        return fit(name, factory, train, valid, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit_baseline", recording)
    plan = workflows.plan_domain_add(home, "toys", DomainData(toys, max_rows=100), CONFIG,
                                     compare=["dcn", "item_rate", "dcn"])
    assert plan.compare == ["dcn", "item_rate"]
    added = workflows.add_domain(plan, CONFIG, QUIET)
    floors = 2  # the add's own count-rule floors go through fit_baseline first
    assert [name for name, _, _ in seen[floors:]] == ["dcn", "item_rate"]
    for _, train, valid in seen:  # the --max-rows subsample and the split the DSN used, row for row
        assert train == plan.train_rows and valid == plan.valid_rows
    comparison = added.comparison
    rows = {"train": len(plan.train_rows), "valid": len(plan.valid_rows), "test": len(plan.test_rows)}
    assert rows == {"train": 100, "valid": 20, "test": 20} == added.training.rows == comparison["rows"]
    for name in ("dcn", "item_rate"):
        m = comparison["models"][name]
        assert m["test_auc"] is not None and m["test_auc_interval"][0] <= m["test_auc"] <= m["test_auc_interval"][1]
        assert m["test_logloss"] > 0 and 0 <= m["test_ece"] <= 1 and m["train_seconds"] >= 0
        gain = m["dsn_gain"]  # the DSN minus this model on the same test rows, paired bootstrap interval
        assert gain["gain"] == pytest.approx(added.training.test["auc"] - m["test_auc"])
        assert gain["low"] <= gain["gain"] <= gain["high"] and gain["low"] < gain["high"]
    assert comparison["models"]["item_rate"]["test_auc"] == pytest.approx(added.floors["item_rate"]["auc"])
    stored = yaml.safe_load((added.target / "domain.yaml").read_text())["metrics"]
    assert stored["compare"] == comparison

    plain_plan = workflows.plan_domain_add(plain_home, "toys", DomainData(toys, max_rows=100), CONFIG)
    assert plain_plan.compare == []
    plain = workflows.add_domain(plain_plan, CONFIG, QUIET)
    assert plain.comparison is None
    assert "compare" not in yaml.safe_load((plain.target / "domain.yaml").read_text())["metrics"]
    # the weights bit for bit (the file's bytes are not: safetensors writes its metadata keys in any order)
    weights, plain_weights = (load_file(str(t / "dsn.safetensors")) for t in (added.target, plain.target))
    assert weights.keys() == plain_weights.keys()
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    samples = toy_samples(40, seed=11, domains=("toys",))
    with_compare = predict_samples(load_model(home)[0], samples)
    without = predict_samples(load_model(plain_home)[0], samples)
    assert torch.equal(torch.as_tensor(with_compare.probs), torch.as_tensor(without.probs))


def test_an_unknown_model_is_refused_before_anything_is_loaded_or_trained(home, toys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the core was loaded")

    monkeypatch.setattr(workflows, "load_core", never)
    with pytest.raises(ValueError, match=r"--compare: unknown model 'nope'; valid: .*dcn.*item_rate"):
        workflows.plan_domain_add(home, "toys", toys, compare=["dcn", "nope"])
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys), "--home", str(home),
                                 "--compare", "dcn, nope,wat"])
    assert result.exit_code == 1
    assert "unknown models 'nope', 'wat'; valid: deepfm, dcn" in result.output
    assert "training a DSN" not in result.output and not (home / "domains" / "toys").exists()


def test_the_cli_prints_the_comparison_and_domain_show_prints_it_again(home, toys, monkeypatch):
    fit = trainer.fit_baseline

    def broken_deepfm(name, *args, **kwargs):
        if name == "deepfm":
            raise RuntimeError("out of luck")
        return fit(name, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit_baseline", broken_deepfm)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys), "--home", str(home), "--epochs", "2",
                                 "--compare", "dcn,deepfm,item_rate"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "then training dcn, deepfm, item_rate on the same rows" in out
    assert "Compared on the same 160 train / 20 valid / 20 test rows as the DSN" in out
    assert re.search(r"dcn \(single-domain ID model\)\s+0\.\d{4}\s+\[0\.\d{3}, [01]\.\d{3}\]", out), out
    assert re.search(r"dcn \(single-domain ID model\).*[+-]\d\.\d{4} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]$", out,
                     re.MULTILINE), out  # the DSN's paired AUC gain over dcn
    assert re.search(r"item_rate \(count rule\)\s+0\.\d{4}", out), out
    assert "deepfm failed: RuntimeError: out of luck" in out  # reported; the DSN is registered all the same
    assert "domain 'toys' registered" in out

    shown = runner.invoke(app, ["domain", "show", "toys", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert "Compared on the same 160 train / 20 valid / 20 test rows as the DSN" in shown.output
    assert "metric compare:" not in shown.output and "metric test_auc:" in shown.output
    table = lambda text: text[text.index("Compared on"):].splitlines()[:6]  # noqa: E731
    assert table(shown.output) == table(out)  # the same numbers, from the bundle's metrics
    as_json = json.loads(runner.invoke(app, ["domain", "show", "toys", "--home", str(home), "--json"]).output)
    compared = as_json["metrics"]["compare"]
    assert compared["rows"] == {"train": 160, "valid": 20, "test": 20}
    assert set(compared["models"]) == {"dcn", "deepfm", "item_rate"}
    assert compared["models"]["deepfm"]["error"] == "RuntimeError: out of luck"
    assert compared["models"]["dcn"]["test_auc"] is not None


def test_without_compare_the_add_prints_no_comparison(home, toys):
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys), "--home", str(home), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "Compared on" not in result.output and "for comparison" not in result.output


def test_domain_show_prints_a_hand_edited_comparison_raw_instead_of_failing(home, toys):
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys), "--home", str(home), "--epochs", "1",
                                 "--compare", "item_rate"])
    assert result.exit_code == 0, result.output
    record_path = home / "domains" / "toys" / "domain.yaml"
    record = yaml.safe_load(record_path.read_text())
    record["metrics"]["compare"]["models"]["item_rate"]["test_auc_interval"] = "oops"
    record_path.write_text(yaml.safe_dump(record, sort_keys=False))
    shown = runner.invoke(app, ["domain", "show", "toys", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert "metric compare:" in shown.output and "oops" in shown.output and "Compared on" not in shown.output
