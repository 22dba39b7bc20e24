"""The use-case layer (unictr_core.workflows): each verb returns its result and prints nothing; the CLI only prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core import DomainAddOptions, workflows
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.data.data_io import write_samples
from unictr_core.store.registry import Registry, RegistryError

runner = CliRunner()


def test_add_evaluate_predict_remove_return_results_and_print_nothing(home, tmp_path, capfd):
    toys = tmp_path / "toys.jsonl"
    write_samples(toys, toy_samples(80, seed=3, domains=("toys",)))
    capfd.readouterr()

    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=0, precision="fp32")
    plan = workflows.plan_domain_add(home, "toys", toys, config)
    assert (len(plan.train_rows), len(plan.valid_rows), len(plan.test_rows)) == (64, 8, 8)
    epochs = []
    added = workflows.add_domain(plan, config, DomainAddOptions(on_epoch=epochs.append, progress=False))
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert added.target == home / "domains" / "toys" and (added.target / "dsn.safetensors").is_file()
    assert set(added.floors) == {"user_rate", "item_rate"}
    assert Registry.open(home).get("toys").status == "ready"

    samples = toy_samples(40, seed=9, domains=("books", "toys", "nowhere"))
    evaluated = workflows.evaluate(home, samples, precision="fp32")
    assert {"books", "toys", "nowhere"} <= set(evaluated.report["domains"])
    predicted = workflows.predict(home, samples, precision="fp32")
    assert len(predicted.records) == 40 and predicted.zero_shot_domains == ["nowhere"]

    removed = workflows.remove_domain(home, "toys")
    assert removed.removed == home / "domains" / "toys" and removed.still_known is None
    assert not (home / "domains" / "toys").exists()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # no line, no progress bar: printing is the CLI's job


def test_a_plan_refuses_what_the_command_would_refuse(home, tmp_path):
    toys = tmp_path / "toys.jsonl"
    write_samples(toys, toy_samples(40, seed=3, domains=("toys",)))
    with pytest.raises(RegistryError, match="already has a local bundle"):
        workflows.plan_domain_add(home, "books", toys)
    with pytest.raises(RegistryError, match="no trained core"):
        workflows.plan_domain_add(tmp_path / "empty-home", "toys", toys)
    with pytest.raises(RegistryError, match="shipped definition"):
        workflows.remove_domain(home, "gift_cards")


def test_the_cli_prints_what_the_workflow_returns(home, tmp_path):
    samples = toy_samples(30, seed=5, domains=("books", "movies"))
    path = tmp_path / "rows.jsonl"
    write_samples(path, samples)
    result = runner.invoke(app, ["predict", "--input", str(path), "--home", str(home), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    direct = workflows.predict(home, samples, precision="fp32").records
    assert [r["probability"] for r in printed] == [r["probability"] for r in direct]


def test_train_home_writes_the_plan_and_reports_it(tiny_bert, tmp_path, capfd):
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.05"]).exit_code == 0
    capfd.readouterr()
    plan = workflows.plan_training(data, tmp_path / "home",
                                   ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64, tune_layers=0),
                                   TrainConfig(epochs=1, batch_size=16, max_steps=2), max_rows=20)
    assert plan.domains == ["books", "movies", "music"] and plan.train_config.domains == plan.domains
    assert plan.training_rows == sum(min(20, n) for n in (80, 40, 14))
    done = workflows.train_home(plan, progress=False)
    assert Registry(tmp_path / "home").core_fingerprint == done.fingerprint
    assert set(done.training.valid_metrics) == set(plan.domains)
    assert np.isfinite(done.training.history[0]["train_loss"])
    assert capfd.readouterr() == ("", "")


def test_training_into_a_home_with_a_core_needs_replace_and_names_the_domains_it_would_orphan(home, tiny_bert,
                                                                                              tmp_path):
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.05"]).exit_code == 0
    core = Registry(home).core_fingerprint
    model, train = ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64), TrainConfig(max_steps=1)
    with pytest.raises(ValueError, match="--replace") as refused:
        workflows.plan_training(data, home, model, train, domains=["books"])
    assert f"already has a trained core {core[:12]}" in str(refused.value)
    assert "DSNs of books" in str(refused.value) and "DSNs of movies, music were trained for that core" in str(
        refused.value)
    replacing = workflows.plan_training(data, home, model, train, domains=["books"], replace=True).replacing
    assert (replacing.core_fingerprint, replacing.retrained, replacing.orphaned) == (core, ["books"],
                                                                                      ["movies", "music"])
    assert workflows.plan_training(data, tmp_path / "new-home", model, train).replacing is None

    command = ["train", "--data", str(data), "--home", str(home), "--backbone", tiny_bert, "--domains", "books",
               "--epochs", "1", "--max-steps", "1", "--tower", "16,8", "--max-length", "64"]
    result = runner.invoke(app, command)
    assert result.exit_code == 1 and "movies, music" in result.output and "--replace" in result.output
    assert Registry(home).core_fingerprint == core  # nothing was written
    result = runner.invoke(app, [*command, "--replace"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "movies, music were trained for that core and are orphaned" in result.output
    registry = Registry.open(home)
    assert registry.core_fingerprint != core
    assert {name: registry.get(name).status for name in ("books", "movies", "music")} == {
        "books": "ready", "movies": "incompatible", "music": "incompatible"}


def test_predict_and_domain_splits_leave_the_callers_samples_unchanged(home, tmp_path):
    import dataclasses

    from unictr_core.fit.domain_training import domain_splits

    samples = toy_samples(20, seed=5, domains=("books", "movies"))
    before = [s.to_dict() for s in samples]
    as_books = workflows.predict(home, samples, domain="books", precision="fp32")
    assert [s.to_dict() for s in samples] == before  # the caller's rows keep their domains
    assert {r["domain"] for r in as_books.records} == {"books"}
    copies = [dataclasses.replace(s, domain="books") for s in samples]
    assert as_books.records == workflows.predict(home, copies, precision="fp32").records

    path = tmp_path / "rows.jsonl"
    write_samples(path, samples)
    train, valid, test, _ = domain_splits(path, "toys", all_rows=True)
    assert {s.domain for s in train + valid + test} == {"toys"} and len(train + valid + test) == 20
    assert [s.to_dict() for s in samples] == before
