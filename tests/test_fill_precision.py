"""--fill-precision: the frozen backbone's forward over the cached rows, apart from the heads' training precision."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.fit import domain_training
from unictr_core.fit.domain_training import DomainAddOptions, train_domain
from unictr_core.fit.training import train_unictr
from unictr_core.modeling import precision as precisions
from unictr_core.store.loading import load_model

runner = CliRunner()
CPU = torch.device("cpu")


def test_fill_precision_resolves_as_inference(monkeypatch):
    monkeypatch.setattr(precisions, "cpu_bf16_flags", lambda: ())
    assert precisions.resolve_fill("same", "bf16", CPU) == "bf16"  # the training's, already resolved
    assert precisions.resolve_fill("auto", "fp32", CPU) == "fp32"  # no native bf16: fp32
    monkeypatch.setattr(precisions, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert precisions.resolve_fill("same", "fp32", CPU) == "fp32"
    # native bf16: auto fills in bf16 although CPU training under auto stays fp32
    assert precisions.resolve_fill("auto", precisions.resolve("auto", CPU, training=True), CPU) == "bf16"
    assert precisions.resolve_fill("fp32", "bf16", CPU) == "fp32"
    with pytest.raises(ValueError, match="one of same, auto, fp32, bf16"):
        precisions.resolve_fill("fp16", "fp32", CPU)
    with pytest.raises(ValueError, match="fill_precision must be one of"):
        TrainConfig(fill_precision="int8").validate()


def _summary_config(backbone: str) -> ModelConfig:
    return ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64, tune_layers=0, token_summary=3)


def _record_fill_precisions(monkeypatch, module) -> list:
    """The precision of every ``module.build_cache`` call from now on, in order (the call itself still runs)."""
    seen = []
    real = module.build_cache

    def recording(model, encoded, layers, rows=None, config=None, *args, **kwargs):
        seen.append(config.precision)
        return real(model, encoded, layers, rows, config, *args, **kwargs)

    monkeypatch.setattr(module, "build_cache", recording)
    return seen


def test_training_fills_in_bf16_and_trains_the_heads_in_fp32(tiny_bert, monkeypatch):
    from unictr_core.fit import training

    seen = _record_fill_precisions(monkeypatch, training)
    results = {}
    for fill in ("same", "bf16"):
        seen.clear()
        config = TrainConfig(epochs=1, batch_size=16, fill_precision=fill, reuse_states=False)
        results[fill] = train_unictr(toy_samples(48), toy_samples(30, seed=1), _summary_config(tiny_bert), config,
                                     progress=False)
        want = "fp32" if fill == "same" else "bf16"
        assert seen == [want, want]  # the train and the valid cache, each in the fill precision
        assert results[fill].precision == "fp32" and results[fill].cache["precision"] == want
    assert results["same"].cache["storage"] == "fp16" and results["bf16"].cache["storage"] == "bf16"
    # the bf16 states are close to fp32's, not the same: the first epoch's loss moves a little
    same, bf16 = (results[f].history[0]["train_loss"] for f in ("same", "bf16"))
    assert same != bf16 and abs(same - bf16) < 0.05


def test_domain_add_fills_its_caches_in_the_fill_precision(home, monkeypatch):
    seen = _record_fill_precisions(monkeypatch, domain_training)
    data = toy_samples(60, seed=11, domains=("toys",))
    model, _ = load_model(home)
    config = TrainConfig(epochs=1, batch_size=16, fill_precision="bf16")
    result = train_domain(model, "toys", data[:40], data[40:50], data[50:], config=config,
                          options=DomainAddOptions(progress=False))
    assert seen == ["bf16", "bf16", "bf16"]  # train, valid and test rows
    assert result.test["rows"] == 10


def test_cli_fill_precision(tiny_bert, tmp_path):
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    args = ["train", "--data", str(data), "--home", str(tmp_path / "home"), "--backbone", tiny_bert, "--epochs", "1",
            "--max-rows", "20", "--tune-layers", "0", "--token-summary", "3", "--max-length", "64"]
    done = runner.invoke(app, args + ["--fill-precision", "bf16"])
    assert done.exit_code == 0, done.output
    assert "(fp32; hidden states of layers" in done.output and "bf16, filled in bf16" in done.output
    bad = runner.invoke(app, args + ["--fill-precision", "fp16", "--replace"])
    assert bad.exit_code == 1 and "fill_precision must be one of same, auto, fp32, bf16" in bad.output


def test_fill_precision_option_of_train_domain_add_and_benchmark():
    import typer.main

    cli = typer.main.get_command(app)
    options = {"train": (cli.commands["train"], "fill_precision"),
               "domain add": (cli.commands["domain"].commands["add"], "fill_precision"),
               "benchmark": (cli.commands["benchmark"], "uni_fill_precision")}
    for name, (command, param) in options.items():
        assert {p.name: p.default for p in command.params}[param] == TrainConfig.fill_precision == "same", name
