"""Token summaries (ModelConfig.token_summary): what a slot averages, padding, the cache of K vectors per row,
its reuse across runs, and a core trained with them that serves, adds a domain and reloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.data.data_io import write_samples
from unictr_core.data.dataset import write_dataset
from unictr_core.data.schema import Sample
from unictr_core.fit.training import build_model, train_unictr
from unictr_core.modeling import hidden_cache
from unictr_core.modeling.hidden_cache import build_cache
from unictr_core.modeling.predict import predict_encoded, predict_samples, tokenize_samples
from unictr_core.modeling.summary import summarize, summary_weights

runner = CliRunner()
DOMAINS = ["books", "movies", "music"]


def frozen_config(backbone: str, slots: int) -> ModelConfig:
    return ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64, tune_layers=0, token_summary=slots)


def test_slot_zero_is_the_mean_and_the_others_split_the_tokens_in_order():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]])
    states = torch.arange(16, dtype=torch.float32).reshape(2, 8, 1)
    summaries, summary_mask = summarize([None, states], mask, 4)
    assert summaries[0] is None and summary_mask.shape == (2, 4) and bool(summary_mask.all())
    first = summaries[1][0, :, 0].tolist()
    assert first == pytest.approx([2.5, 0.5, 2.5, 4.5])  # mean of 0..5; parts {0,1} {2,3} {4,5}
    second = summaries[1][1, :, 0].tolist()  # two tokens, three parts: each token its own part, one part empty
    assert second[0] == pytest.approx(8.5) and sorted(second[1:]) == pytest.approx([0.0, 8.0, 9.0])
    weights = summary_weights(mask, 4)
    assert torch.all(weights[:, :, 6:][0] == 0) and torch.allclose(weights[0].sum(-1), torch.ones(4))
    assert summarize([states], mask, 0)[0][0] is states  # 0: every token, unchanged


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_a_summarised_prediction_does_not_depend_on_the_other_rows_of_its_batch(backbone, request):
    model = build_model(frozen_config(request.getfixturevalue(backbone), 3), ["books"])
    short = Sample("books", "u1", "i1", title="space robot", history=[])
    long = Sample("books", "u2", "i2", title="galaxy saga " * 20, history=["cooking kitchen recipe"] * 5)
    alone = predict_samples(model, [short]).probs[0]
    together = predict_samples(model, [short, long], batch_size=2).probs[0]
    assert abs(alone - together) < 1e-5


def test_the_cache_holds_k_vectors_per_row_and_is_reused_by_the_next_run(tiny_bert):
    model = build_model(frozen_config(tiny_bert, 4), DOMAINS).eval()
    encoded = tokenize_samples(model, toy_samples(30, seed=5))
    layers = model.cached_layers()
    first = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=7), head_inputs=True)
    assert not first.reused and first.row_length == 4
    assert first.nbytes == 30 * 4 * len(layers) * model.hidden_size * 2  # fp16: K x layers x hidden x 2 per row
    stored = list(hidden_cache.states_dir().glob("*.npy"))
    assert stored, "the summaries were not stored"
    again = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=7), head_inputs=True)
    assert again.reused
    rows = [29, 3, 17, 0]
    (a, mask_a), (b, mask_b) = first.batch(rows), again.batch(rows)
    assert torch.equal(mask_a, mask_b) and all(torch.equal(a[layer], b[layer]) for layer in layers)
    # other prompts, another summary size or other rows of the same set: another key, computed afresh
    other = tokenize_samples(model, toy_samples(30, seed=6))
    assert not build_cache(model, other, layers, config=TrainConfig(), head_inputs=True).reused
    assert not build_cache(model, encoded, layers, rows=range(10), config=TrainConfig(), head_inputs=True).reused
    # a damaged file is not trusted: computed again and rewritten
    for path in hidden_cache.states_dir().glob("*.npy"):
        path.write_bytes(path.read_bytes()[:100])
    repaired = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=7), head_inputs=True)
    assert not repaired.reused
    assert torch.equal(repaired.batch(rows)[0][layers[-1]], a[layers[-1]])
    assert build_cache(model, encoded, layers, config=TrainConfig(), head_inputs=True).reused


def test_cached_and_live_predictions_agree_with_summaries(tiny_bert):
    model = build_model(frozen_config(tiny_bert, 2), DOMAINS).eval()
    encoded = tokenize_samples(model, toy_samples(24, seed=4))
    cache = build_cache(model, encoded, model.cached_layers(),
                        config=TrainConfig(eval_batch_size=5, cache_dtype="fp32", reuse_states=False), head_inputs=True)
    live = predict_encoded(model, encoded, batch_size=7)
    cached = predict_encoded(model, encoded, batch_size=7, cache=cache)
    np.testing.assert_allclose(cached.probs, live.probs, atol=1e-6)


def test_a_core_with_summaries_and_statistics_trains_adds_a_domain_and_reloads_from_the_cli(tiny_bert, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, toy_samples(60), toy_samples(30, seed=1), toy_samples(30, seed=2))
    home = tmp_path / "home"
    trained = runner.invoke(app, ["train", "--data", str(data), "--home", str(home), "--backbone", tiny_bert,
                                  "--tower", "16,8", "--max-length", "64", "--tune-layers", "0",
                                  "--token-summary", "3", "--dsn-stats", "--epochs", "1", "--batch-size", "16"])
    assert trained.exit_code == 0, trained.output
    shown = runner.invoke(app, ["domain", "list", "--home", str(home), "--json"])
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.output)
    assert not listed.get("problems"), listed
    manifest = (home / "core" / "manifest.yaml").read_text()
    assert "token_summary: 3" in manifest
    toys = tmp_path / "toys.jsonl"
    write_samples(toys, toy_samples(80, seed=3, domains=("toys",)))
    rows = tmp_path / "rows.jsonl"
    write_samples(rows, [s for s in toy_samples(20, seed=9)])
    before = runner.invoke(app, ["predict", "--input", str(rows), "--home", str(home), "--out",
                                 str(tmp_path / "before.jsonl")])
    assert before.exit_code == 0, before.output
    added = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys), "--home", str(home), "--epochs", "1"])
    assert added.exit_code == 0, added.output
    after = runner.invoke(app, ["predict", "--input", str(rows), "--home", str(home), "--out",
                                str(tmp_path / "after.jsonl")])
    assert after.exit_code == 0, after.output
    read = [[json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
            for name in ("before", "after")]
    assert read[0] == read[1], "adding a domain moved another domain's predictions"
    predicted = runner.invoke(app, ["predict", "--input", str(toys), "--home", str(home), "--domain", "toys",
                                    "--out", str(tmp_path / "toys-out.jsonl")])
    assert predicted.exit_code == 0, predicted.output


def test_joint_dsns_with_count_statistics_train_causally_and_predict_from_their_tables(tiny_bert):
    from unictr_core.fit.training import fit_count_statistics

    config = frozen_config(tiny_bert, 2)
    train = toy_samples(60)
    result = train_unictr(train, toy_samples(30, seed=1), config,
                          TrainConfig(epochs=1, batch_size=16, dsn_stats=True), progress=False)
    model = result.model
    assert all(dsn.spec.stats and dsn.counts is not None for dsn in model.dsns.values())
    books = [s for s in train if s.domain == "books"]
    assert float(model.dsns["books"].counts.total[1]) == len(books)  # the tables hold the domain's training rows
    counts = fit_count_statistics(model, train).numpy()
    first = next(i for i, s in enumerate(train) if s.domain == "books")
    assert counts[first].tolist() == [0.0] * 6  # the domain's first row has seen nothing
    later = [i for i, s in enumerate(train) if s.domain == "books"][-1]
    assert counts[later, 5] == len(books) - 1  # the last row saw every earlier row of its domain, not itself
    probs = predict_samples(model, toy_samples(12, seed=7)).probs
    assert np.isfinite(probs).all()


def test_ranking_with_a_reused_prefix_summarises_as_prediction_does(tiny_llama):
    from unictr_core.modeling.rank import candidate_samples, rank_samples

    model = build_model(ModelConfig(backbone=tiny_llama, tower_dims=[16, 8], max_length=64, token_summary=3),
                        ["books"]).eval()
    user = {"domain": "books", "user_id": "u7", "history": ["star galaxy space", "galaxy saga"]}
    items = [{"item_id": s.item_id, "title": s.title} for s in toy_samples(6, seed=21, domains=("books",))]
    samples = candidate_samples(user, items)
    ranking = rank_samples(model, samples, batch_size=4)
    assert ranking.prefix_reuse
    alone = predict_samples(model, samples, batch_size=1)
    np.testing.assert_allclose(ranking.predictions.probs, alone.probs, atol=1e-5)
