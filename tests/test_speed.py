"""Speed settings: --tune-layers (LoRA above a cut, cached hidden states below it), the cache, bf16, int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.modeling import precision as precisions
from unictr_core.store.writes import save_trained
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.data.data_io import write_samples
from unictr_core.modeling.hidden_cache import build_cache
from unictr_core.modeling.predict import tokenize_samples, predict_encoded, predict_samples
from unictr_core.fit.training import build_model, train_unictr

runner = CliRunner()
DOMAINS = ["books", "movies", "music"]


def config_for(backbone: str, tune_layers, token_summary: int = 0) -> ModelConfig:
    return ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64, tune_layers=tune_layers,
                       token_summary=token_summary)


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("token_summary", [0, 3])
def test_cached_forward_equals_the_full_forward_at_every_cut(kind, token_summary, tiny_bert, tiny_llama):
    backbone = tiny_bert if kind == "bert" else tiny_llama
    samples = toy_samples(24, seed=4)
    for tuned in (0, 1, 3):
        model = build_model(config_for(backbone, tuned, token_summary), DOMAINS).eval()
        with torch.no_grad():  # LoRA B starts at zero: move it, so the tuned layers differ from the pretrained
            for name, p in model.backbone.named_parameters():
                if "lora_B" in name:
                    p.add_(0.1 * torch.randn_like(p))
        assert model.cut == model.num_layers - tuned
        layers = model.cached_layers()
        assert max(layers) == model.cut and all(layer <= model.cut for layer in layers)
        encoded = tokenize_samples(model, samples)
        cache = build_cache(model, encoded, layers,
                            config=TrainConfig(eval_batch_size=5, cache_dtype="fp32", reuse_states=False),
                            head_inputs=model.caches_head_inputs)
        if token_summary and model.caches_head_inputs:  # the frozen backbone's cache holds K vectors per row
            assert cache.nbytes == len(samples) * token_summary * len(layers) * model.hidden_size * 4
        live = predict_encoded(model, encoded, batch_size=7)
        cached = predict_encoded(model, encoded, batch_size=7, cache=cache)
        np.testing.assert_allclose(cached.probs, live.probs, atol=1e-6)
        np.testing.assert_allclose(cached.general_probs, live.general_probs, atol=1e-6)


def test_lora_sits_only_above_the_cut(tiny_bert):
    assert build_model(config_for(tiny_bert, None), DOMAINS).cut == 0
    model = build_model(config_for(tiny_bert, 1), DOMAINS)
    lora = [name for name in model.lora_state() if "lora_A" in name]
    assert lora and all(".layer.3." in name for name in lora), lora  # 4 layers: only the top one
    frozen = build_model(config_for(tiny_bert, 0), DOMAINS)
    assert frozen.lora_state() == {} and not any(p.requires_grad for p in frozen.backbone.parameters())
    with pytest.raises(ValueError, match="exceeds the backbone's 4 layers"):
        build_model(config_for(tiny_bert, 5), DOMAINS)


def test_training_above_the_cut_moves_only_the_top_layers_and_heads(tiny_bert, fast_train_config):
    config = config_for(tiny_bert, 1)
    initial = build_model(config, DOMAINS, seed=0).state_dict()
    result = train_unictr(toy_samples(48), toy_samples(30, seed=1), config, fast_train_config, progress=False)
    after = result.model.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, initial[k])}
    assert any("layer.3" in k and "lora_B" in k for k in changed)
    assert not any("lora" not in k and k.startswith("backbone.") for k in changed), "a pretrained weight moved"
    assert any(k.startswith("general.") for k in changed) and any(k.startswith("dsns.") for k in changed)
    assert result.cache["layers"] == [1, 2, 3] and result.cache["rows"] == 78 and result.cache["bytes"] > 0
    assert len(result.epoch_seconds) == len(result.history) == 1


def test_cache_spills_beyond_the_budget_to_a_deleted_memory_map(tiny_bert, tmp_path):
    model = build_model(config_for(tiny_bert, 0), DOMAINS).eval()
    encoded = tokenize_samples(model, toy_samples(20, seed=2))
    layers = model.cached_layers()
    in_ram = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=6))
    assert in_ram.disk_bytes == 0 and in_ram.ram_bytes == in_ram.nbytes
    half = in_ram.nbytes / 2 / 2**30
    spilled = build_cache(model, encoded, layers,
                          config=TrainConfig(eval_batch_size=6, max_cache_gb=half, cache_dir=str(tmp_path)))
    assert 0 < spilled.disk_bytes < spilled.nbytes and spilled.ram_bytes <= in_ram.nbytes / 2
    assert list(tmp_path.iterdir()) == [], "the memory-mapped file is unlinked once mapped"
    rows = [19, 0, 7, 12, 3]
    for (a, mask_a), (b, mask_b) in [(in_ram.batch(rows), spilled.batch(rows))]:
        assert torch.equal(mask_a, mask_b)
        for layer in layers:
            assert torch.equal(a[layer], b[layer])


def test_one_precision_default_for_cli_api_and_training():
    import inspect

    import typer.main

    from unictr_cli.main import app
    from unictr_core import workflows
    from unictr_core.config import DEFAULT_PRECISION, DOMAIN_ADD_DEFAULTS, ServeSettings, TrainConfig
    from unictr_core.modeling.predict import predict_samples

    cli = typer.main.get_command(app)
    commands = {"train": cli.commands["train"], "evaluate": cli.commands["evaluate"],
                "predict": cli.commands["predict"], "domain add": cli.commands["domain"].commands["add"],
                "serve": cli.commands["serve"], "rank": cli.commands["rank"]}
    for name, command in commands.items():
        assert {p.name: p.default for p in command.params}["precision"] == DEFAULT_PRECISION, name
    for function in (workflows.serving_model, workflows.evaluate, workflows.predict):
        assert inspect.signature(function).parameters["precision"].default == DEFAULT_PRECISION, function
    assert inspect.signature(workflows.plan_domain_add).parameters["config"].default is DOMAIN_ADD_DEFAULTS
    assert TrainConfig().precision == DEFAULT_PRECISION and ServeSettings(home=Path(".")).precision == DEFAULT_PRECISION
    assert DOMAIN_ADD_DEFAULTS.precision == DEFAULT_PRECISION  # train_domain's default config
    # an unprepared model predicts at the default (a prepared one at the precision it was prepared for)
    assert inspect.signature(predict_samples).parameters["precision"].default is None


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precisions, "cpu_bf16_flags", lambda: ())
    assert precisions.resolve("auto", cpu) == "fp32" and precisions.resolve("bf16", cpu) == "bf16"
    assert "emulated" in precisions.describe("bf16", cpu)
    monkeypatch.setattr(precisions, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precisions.resolve("auto", cpu) == "bf16" and precisions.resolve("auto", cpu, quantized=True) == "fp32"
    # training on a CPU stays fp32 under auto, native bf16 or not (measured: no faster, moves the AUC)
    assert precisions.resolve("auto", cpu, training=True) == "fp32"
    assert precisions.resolve("bf16", cpu, training=True) == "bf16"
    with pytest.raises(ValueError, match="cannot be combined"):
        precisions.resolve("bf16", cpu, quantized=True)
    with pytest.raises(ValueError, match="one of auto, fp32, bf16"):
        precisions.resolve("fp16", cpu)


def test_bf16_and_int8_predict_close_to_fp32(tiny_bert):
    model = build_model(config_for(tiny_bert, None), DOMAINS).eval()
    samples = toy_samples(40, seed=6)
    fp32 = predict_samples(model, samples)
    bf16 = predict_samples(model, samples, precision="bf16")
    assert not np.array_equal(bf16.probs, fp32.probs)
    np.testing.assert_allclose(bf16.probs, fp32.probs, atol=0.02)
    precisions.quantize_int8(model)
    assert model.quantized and not any(type(m) is torch.nn.Linear for m in model.backbone.modules())
    int8 = predict_samples(model, samples)
    assert not np.array_equal(int8.probs, fp32.probs)
    np.testing.assert_allclose(int8.probs, fp32.probs, atol=0.02)
    with pytest.raises(ValueError, match="cannot be combined"):
        predict_samples(model, samples, precision="bf16")


def test_cli_tune_layers_precision_and_quantize(tiny_bert, tmp_path):
    data = tmp_path / "rows.jsonl"
    write_samples(data, toy_samples(40, seed=8))
    config = config_for(tiny_bert, 0)
    result = train_unictr(toy_samples(48), toy_samples(30, seed=1), config,
                          TrainConfig(epochs=1, batch_size=16, precision="bf16"), progress=False)
    assert result.precision == "bf16" and result.cache["storage"] == "bf16"
    home = tmp_path / "home"
    save_trained(result.model, home)
    fp32 = runner.invoke(app, ["evaluate", "--data", str(data), "--home", str(home), "--precision", "fp32"])
    int8 = runner.invoke(app, ["evaluate", "--data", str(data), "--home", str(home), "--quantize", "int8"])
    assert fp32.exit_code == 0 and int8.exit_code == 0, fp32.output + int8.output
    assert "overall" in int8.output and int8.output != fp32.output
    assert "computed in fp32" in fp32.output and "computed in int8" in int8.output
    bf16 = runner.invoke(app, ["evaluate", "--data", str(data), "--home", str(home), "--precision", "bf16",
                               "--out", str(tmp_path / "report.json")])
    assert bf16.exit_code == 0, bf16.output
    assert json.loads((tmp_path / "report.json").read_text())["precision"] == "bf16"
    bad = runner.invoke(app, ["predict", "--input", str(data), "--home", str(home), "--quantize", "int8",
                              "--precision", "bf16"])
    assert bad.exit_code == 1 and "cannot be combined" in bad.output
    bad = runner.invoke(app, ["train", "--data", str(tmp_path), "--tune-layers", "some"])
    assert bad.exit_code == 1 and "expected 'all' or a number of layers" in bad.output
