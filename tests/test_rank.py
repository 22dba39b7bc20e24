"""Ranking the candidates of one user: prefix key/value reuse on decoders, batches on encoders; HTTP and CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import toy_samples
from test_fast_path import BF16_TOLERANCE, model_with_lora
from test_serve import call, running
from unictr_cli.main import app as cli_app
from unictr_core.data.schema import DataError
from unictr_core.modeling.fast_path import prepare_for_prediction
from unictr_core.modeling.predict import predict_samples
from unictr_core.modeling.rank import candidate_samples, rank_samples, shared_prefix_length
from unictr_core.workflows import rank, serving_model

PREFIX_TOLERANCE = 1e-5  # prefix reuse vs each row alone, fp32: float rounding only

USER = {"domain": "books", "user_id": "u7", "history": ["star galaxy space", "galaxy saga", "cooking kitchen recipe"]}


def candidates(n: int = 9, seed: int = 21) -> list[dict]:
    return [{"item_id": s.item_id, "title": s.title, **({"brand": s.brand} if s.brand else {})}
            for s in toy_samples(n, seed=seed, domains=("books",))]


def test_decoder_reuses_the_user_prefix_and_predicts_what_each_row_alone_predicts(tiny_llama):
    model = model_with_lora(tiny_llama)
    samples = candidate_samples(USER, candidates())
    ranking = rank_samples(model, samples, batch_size=4)
    alone = predict_samples(model, samples, batch_size=1)
    assert ranking.prefix_reuse and ranking.shared_prefix_tokens > 10 and "key/value cache" in ranking.note
    np.testing.assert_allclose(ranking.predictions.probs, alone.probs, atol=PREFIX_TOLERANCE)
    np.testing.assert_allclose(ranking.predictions.general_probs, alone.general_probs, atol=PREFIX_TOLERANCE)
    probs = [r["probability"] for r in ranking.records()]
    assert probs == sorted(probs, reverse=True) and sorted(r["candidate"] for r in ranking.records()) == list(range(9))
    without = rank_samples(model, samples, batch_size=4, reuse_prefix=False)
    assert not without.prefix_reuse
    np.testing.assert_allclose(without.predictions.probs, alone.probs, atol=PREFIX_TOLERANCE)
    fast = prepare_for_prediction(copy.deepcopy(model), "bf16")  # merged bf16 weights: within bf16's tolerance
    assert np.abs(rank_samples(fast, samples, batch_size=4).predictions.probs - alone.probs).max() < BF16_TOLERANCE


def test_encoder_batches_the_candidates_without_prefix_reuse(tiny_bert):
    model = model_with_lora(tiny_bert)
    samples = candidate_samples(USER, candidates())
    ranking = rank_samples(model, samples, batch_size=4)
    assert not ranking.prefix_reuse and "no prefix reuse applies" in ranking.note
    np.testing.assert_allclose(ranking.predictions.probs, predict_samples(model, samples).probs, atol=1e-6)


def test_candidates_and_the_shared_prefix():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each row keeps a token of its own
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0
    with pytest.raises(DataError, match="candidate 2, field 'user_id': also given in 'user'"):
        candidate_samples(USER, [{"item_id": "a"}, {"item_id": "b", "user_id": "x"}])
    with pytest.raises(DataError, match="candidate 1, field 'item_id': required field is missing"):
        candidate_samples(USER, [{"title": "x"}])
    with pytest.raises(DataError, match="'candidates': expected a non-empty list"):
        candidate_samples(USER, [])


def test_rank_over_http_and_on_the_command_line(home, tmp_path):
    items = candidates(6)
    expected = rank(home, USER, items, precision="fp32").ranking.records()
    with running(home, max_request_rows=6) as base:
        status, answer = call(f"{base}/v1/rank", {"user": USER, "candidates": items, "top": 3})
        too_many = call(f"{base}/v1/rank", {"user": USER, "candidates": items + items})
        clash = call(f"{base}/v1/rank", {"user": USER, "candidates": [dict(items[0], domain="music")]})
    assert status == 200 and answer["ranking"]["candidates"] == 6 and not answer["ranking"]["prefix_reuse"]
    assert [r["item_id"] for r in answer["candidates"]] == [r["item_id"] for r in expected[:3]]
    np.testing.assert_allclose([r["probability"] for r in answer["candidates"]],
                               [r["probability"] for r in expected[:3]], atol=1e-6)
    assert too_many[0] == 413 and clash[0] == 422 and "also given in 'user'" in clash[1]["error"]

    (tmp_path / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    result = CliRunner().invoke(cli_app, ["rank", "--home", str(home), "--user", json.dumps(USER), "--candidates",
                                          str(tmp_path / "items.jsonl"), "--top", "2", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["item_id"] for r in printed] == [r["item_id"] for r in expected[:2]]
    model, _ = serving_model(home, ["books"], "fp32")
    alone = predict_samples(model, candidate_samples(USER, items))
    assert printed[0]["probability"] == pytest.approx(alone.probs.max(), abs=1e-6)
