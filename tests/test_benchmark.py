"""``unictr benchmark`` on a tiny built-in dataset with a tiny random backbone."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from unictr_cli.main import app
from unictr_core import metrics
from unictr_core.benchmark import BenchmarkOptions, run_benchmark
from unictr_core.baselines import BaselineSettings
from unictr_core.data.synthetic import write_builtin_dataset
from unictr_core.modeling.tiny import make_tiny_backbone

FAST = BaselineSettings(batch_size=64, lr=0.01, embed_dim=8, hidden=(16,))


@pytest.fixture(autouse=True, scope="module")
def _setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "builtin"
    write_builtin_dataset(path, seed=0, scale=0.3)
    return path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_tiny_backbone(tmp_path_factory.mktemp("bb") / "tiny", hidden_size=32, num_layers=2)


def _cli(*args: str):
    return CliRunner().invoke(app, ["benchmark", *args])      # the real `unictr` application


@pytest.fixture(scope="module")
def full_run(dataset, backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = _cli("--data", str(dataset), "--out", str(out),
                  "--models", "deepfm,dcn,shared_bottom,star,user_rate,unictr", "--epochs", "2", "--uni-epochs", "1",
                  "--uni-backbone", str(backbone), "--uni-max-length", "64", "--uni-tune-layers", "1",
                  "--embed-dim", "8", "--lr", "0.01", "--patience", "1", "--threads", "1", "--quiet")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output, json.loads((out / "benchmark.json").read_text()), out


def test_table_iii_marks_best_baselines_and_relaimpr_matches_json(full_run):
    output, report, out = full_run
    assert "Table III" in output and (out / "benchmark.txt").read_text().startswith("Table III")
    models = report["models"]
    assert list(models) == ["deepfm", "dcn", "shared_bottom", "star", "user_rate", "unictr"]
    assert models["deepfm"]["category"] == "single-domain" and models["star"]["category"] == "multi-domain"
    assert models["user_rate"]["category"] == "floor (count rule)" and models["user_rate"]["parameters"] == 0
    floor_row = next(line for line in output.splitlines() if line.startswith("floor (count rule)"))
    assert f"{models['user_rate']['test']['books']['auc']:.4f} " in floor_row  # first rows, never marked best
    assert report["rela_impr"]["user_rate"]["mean"] == pytest.approx(
        metrics.rela_impr(models["unictr"]["mean_auc"], models["user_rate"]["mean_auc"]))
    domains = report["dataset"]["joint_domains"]
    assert domains == ["books", "movies", "music"] and report["dataset"]["holdout_domains"] == ["board_games"]
    for domain in domains:
        singles = {n: models[n]["test"][domain]["auc"] for n in ("deepfm", "dcn")}
        multis = {n: models[n]["test"][domain]["auc"] for n in ("shared_bottom", "star")}
        assert report["best"]["single-domain"][domain] == max(singles, key=singles.get)
        assert report["best"]["multi-domain"][domain] == max(multis, key=multis.get)
        uni = models["unictr"]["test"][domain]["auc"]
        for name in ("deepfm", "star"):
            expected = metrics.rela_impr(uni, models[name]["test"][domain]["auc"])
            assert report["rela_impr"][name][domain] == pytest.approx(expected)
    best_single = report["best"]["single-domain"]["books"]
    row = next(line for line in output.splitlines() if line.startswith("single-domain") and f" {best_single} " in line)
    assert f"{models[best_single]['test']['books']['auc']:.4f}*" in row
    assert "Uni-CTR vs best single-domain" in output and "Uni-CTR vs best multi-domain" in output
    general = models["unictr"]["test_general"]
    assert set(general) == set(domains) and all(0.0 <= general[d]["auc"] <= 1.0 for d in domains)
    line = next(x for x in output.splitlines() if x.startswith("Uni-CTR's general network on the same test rows"))
    assert f"books {general['books']['auc']:.4f}" in line and f"mean {models['unictr']['mean_general_auc']:.4f}" in line


def test_zero_shot_uses_validation_chosen_heads_and_the_general_network(full_run):
    output, report, _ = full_run
    assert "Zero-shot on held-out domain 'board_games'" in output
    for name in ("deepfm", "dcn", "shared_bottom", "star"):
        z = report["models"][name]["zero_shot"]["board_games"]
        assert set(z["heads"]) == {"books", "movies", "music"}
        valid = {h: m["valid_auc"] for h, m in z["heads"].items()}
        assert z["head"] == max(valid, key=valid.get)
        assert z["auc"] == z["heads"][z["head"]]["test_auc"]
    uni = report["models"]["unictr"]["zero_shot"]["board_games"]
    assert uni["head"] == "general network" and 0.0 <= uni["auc"] <= 1.0
    assert "board_games" not in report["dataset"]["rows_used"]["train"]


def test_timings_and_what_was_used_are_reported(full_run):
    output, report, out = full_run
    for name, r in report["models"].items():
        assert r["train_seconds"] > 0 and r["throughput"] > 0 and r["predict_rows"] == sum(
            report["dataset"]["rows_used"]["test"][d] for d in report["dataset"]["joint_domains"])
    assert "predict samples/s" in output
    assert "at most 2 epochs" in output and "at most 1 epochs" in output and "seed 0" in output
    assert "1 threads" in output and report["environment"]["threads"] == 1
    assert report["options"]["uni_backbone"].endswith("tiny")
    assert report["options"]["uni_tune_layers"] == 1 and "LoRA in the top 1 layers" in output
    assert report["options"]["baseline"]["patience"] == 1 and "patience 1 on validation AUC" in output
    shrinkage = report["models"]["unictr"]["dsn_shrinkage"]     # on by default: one share per joint domain
    assert report["options"]["uni_dsn_shrinkage"] is True and set(shrinkage) == set(report["dataset"]["joint_domains"])
    assert all(0.0 <= m["scale"] <= 1.0 for m in shrinkage.values())
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in output and not (out / "benchmark.png").exists()
    else:
        assert (out / "benchmark.png").stat().st_size > 0


def test_same_seed_same_tables_and_subsampling(dataset):
    options = BenchmarkOptions(models=["dcn", "mmoe"], epochs=2, max_rows=50, max_eval_rows=20, seed=5,
                               baseline=FAST)
    first, second = run_benchmark(dataset, options), run_benchmark(dataset, options)
    for name in ("dcn", "mmoe"):
        assert first["models"][name]["test"] == second["models"][name]["test"]
        assert first["models"][name]["zero_shot"]["board_games"]["auc"] == \
            second["models"][name]["zero_shot"]["board_games"]["auc"]
    used = first["dataset"]["rows_used"]
    assert max(used["train"].values()) <= 50 and max(used["test"].values()) <= 20
    assert first["rela_impr"] == {}          # no Uni-CTR in this run


def test_holdout_override_trains_without_that_domain(dataset):
    report = run_benchmark(dataset, BenchmarkOptions(models=["shared_bottom"], epochs=1, holdout=["music"],
                                                      baseline=FAST))
    assert report["dataset"]["joint_domains"] == ["board_games", "books", "movies"]
    assert "music" not in report["dataset"]["rows_used"]["train"]
    assert set(report["models"]["shared_bottom"]["zero_shot"]) == {"music"}


def test_bad_options_fail_with_a_clear_message(dataset, tmp_path):
    result = _cli("--data", str(dataset), "--out", str(tmp_path), "--models", "deepfm,nosuch")
    assert result.exit_code == 1 and "unknown model(s) nosuch" in result.output
    result = _cli("--data", str(dataset), "--out", str(tmp_path), "--models", "deepfm", "--holdout", "garden")
    assert result.exit_code == 1 and "holdout domain(s) garden" in result.output


def test_the_cli_passes_the_shrinkage_switch(dataset, tmp_path, monkeypatch):
    from unictr_core import benchmark

    seen = []

    def fake_run(data, options, log=None, progress=False):
        seen.append(options)
        raise SystemExit(0)

    monkeypatch.setattr(benchmark, "run_benchmark", fake_run)
    for flag, expected in (([], True), (["--no-uni-dsn-shrinkage"], False)):
        result = _cli("--data", str(dataset), "--out", str(tmp_path), "--models", "unictr", *flag)
        assert result.exit_code == 0, result.output
        assert seen[-1].uni_dsn_shrinkage is expected
