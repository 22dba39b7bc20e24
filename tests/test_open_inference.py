"""The Open Inference Protocol (KServe V2) of `unictr serve`, spoken by a plain HTTP client; precision and API key."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from test_fast_path import BF16_TOLERANCE
from test_serve import call, rows, running
from unictr_cli.main import app as cli_app
from unictr_core.modeling.predict import predict_samples
from unictr_core.serving.state import LiveRegistry
from unictr_core.store.registry import Registry
from unictr_core.workflows import serving_model


def infer_body(samples, **extra) -> dict:
    rows_text = [json.dumps({k: v for k, v in row.items() if k != "domain"}) for row in rows(samples)]
    return {"inputs": [{"name": "samples", "shape": [len(rows_text)], "datatype": "BYTES", "data": rows_text}],
            **extra}


def test_health_metadata_and_inference_as_the_protocol_has_them(home):
    books = toy_samples(5, seed=11, domains=("books",))
    version = Registry(home).core_fingerprint[:12]
    with running(home) as base:
        assert call(f"{base}/v2/health/live") == (200, {"live": True})
        assert call(f"{base}/v2/health/ready") == (200, {"ready": True})
        status, server = call(f"{base}/v2")
        assert status == 200 and server["name"] == "unictr" and server["extensions"] == []
        status, meta = call(f"{base}/v2/models/books")
        assert call(f"{base}/v2/models/books/ready") == (200, {"name": "books", "ready": True})
        status, answer = call(f"{base}/v2/models/books/infer", infer_body(books, id="req-7"))
        versioned = call(f"{base}/v2/models/books/versions/{version}/infer",
                         infer_body(books[:2], outputs=[{"name": "predicted_by"}]))
    assert meta["name"] == "books" and meta["versions"] == [version] and meta["platform"] == "unictr"
    assert meta["inputs"] == [{"name": "samples", "datatype": "BYTES", "shape": [-1],
                               "parameters": meta["inputs"][0]["parameters"]}]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]},
                               {"name": "predicted_by", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["predicted_by"] == "dsn" and meta["parameters"]["precision"] == "fp32"
    assert status == 200
    assert answer["model_name"] == "books" and answer["model_version"] == version and answer["id"] == "req-7"
    probability, predicted_by = answer["outputs"]
    assert probability["name"] == "probability" and probability["datatype"] == "FP32" and probability["shape"] == [5]
    assert predicted_by == {"name": "predicted_by", "datatype": "BYTES", "shape": [5], "data": ["dsn"] * 5}
    model, _ = serving_model(home, ["books"], "fp32")
    np.testing.assert_allclose(probability["data"], predict_samples(model, books).probs, atol=1e-6)
    assert versioned[0] == 200 and [o["name"] for o in versioned[1]["outputs"]] == ["predicted_by"]


def test_protocol_errors_are_one_line_4xx(home):
    books = toy_samples(2, seed=12, domains=("books",))
    good = infer_body(books)
    tensor = good["inputs"][0]
    with running(home, max_request_rows=3) as base:
        url = f"{base}/v2/models/books/infer"
        answers = {
            "unknown model": call(f"{base}/v2/models/nope/infer", good),
            "unknown model ready": call(f"{base}/v2/models/nope/ready"),
            "version": call(f"{base}/v2/models/books/versions/0123/infer", good),
            "datatype": call(url, {"inputs": [dict(tensor, datatype="FP32")]}),
            "shape": call(url, {"inputs": [dict(tensor, shape=[3])]}),
            "input name": call(url, {"inputs": [dict(tensor, name="rows")]}),
            "other domain": call(url, {"inputs": [dict(tensor, data=[json.dumps(dict(rows(books)[0],
                                                                                   domain="music"))] * 2)]}),
            "bad row": call(url, {"inputs": [dict(tensor, data=['{"user_id": "u1"}'] * 2)]}),
            "not json": call(url, {"inputs": [dict(tensor, data=["{nope"] * 2)]}),
            "rows": call(url, {"inputs": [dict(tensor, shape=[4], data=tensor["data"] * 2)]}),
            "output": call(url, dict(good, outputs=[{"name": "logit"}])),
            "binary": call(url, good, headers={"Inference-Header-Content-Length": "10"}),
        }
    statuses = {key: status for key, (status, _) in answers.items()}
    assert statuses == {"unknown model": 404, "unknown model ready": 404, "version": 404, "datatype": 400,
                        "shape": 400, "input name": 400, "other domain": 400, "bad row": 400, "not json": 400,
                        "rows": 413, "output": 400, "binary": 400}
    messages = {key: body["error"] for key, (_, body) in answers.items()}
    assert "not a registered domain" in messages["unknown model"]
    assert messages["bad row"] == ("inference request, input 'samples', row 1, field 'item_id': "
                                   "required field is missing")
    assert "'music' is not this model's domain 'books'" in messages["other domain"]
    assert not any("Traceback" in m or "\n" in m for m in messages.values())


def test_serve_in_bf16_says_so_and_predicts_within_tolerance(home):
    samples = toy_samples(6, seed=13, domains=("books", "music"))
    model, _ = serving_model(home, ["books", "music"], "fp32")
    reference = predict_samples(model, samples).probs
    with running(home, precision="bf16") as base:
        status, domains = call(f"{base}/v1/domains")
        _, answer = call(f"{base}/v1/predict", {"samples": rows(samples)})
        _, meta = call(f"{base}/v2/models/music")
        _, metrics = call(f"{base}/metrics")
    assert status == 200 and domains["serving"]["precision"] == "bf16"
    assert domains["serving"]["state"]["model"] == {"precision": "bf16", "quantize": "none", "lora_merged": True,
                                                    "weights_dtype": "bfloat16"}
    assert 'unictr_model_info{lora_merged="true",precision="bf16",quantize="none"} 1.0' in metrics
    assert 'unictr_requests_total{path="/v2/models/{model}",status="200"} 1.0' in metrics
    assert meta["parameters"]["precision"] == "bf16"
    got = np.array([p["probability"] for p in answer["predictions"]])
    assert np.abs(got - reference).max() < BF16_TOLERANCE


def test_a_domain_added_live_joins_the_bf16_model_in_bf16(home, toys_file):
    live = LiveRegistry(home, precision="bf16")
    assert live.reload()
    first = live.state
    result = CliRunner().invoke(cli_app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                          "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert live.changed() and live.reload()
    second = live.state
    assert second.model.backbone is first.model.backbone  # the prepared core is reused, not prepared again
    assert {p.dtype for p in second.model.dsns["toys"].parameters()} == {torch.bfloat16}
    toys = toy_samples(4, seed=14, domains=("toys",))
    assert not predict_samples(second.model, toys).zero_shot.any()


def test_the_api_key_guards_the_docs_and_the_models_but_not_the_probes(home):
    auth = {"Authorization": "Bearer s3cret"}
    guarded = ["/docs", "/redoc", "/openapi.json", "/v2", "/v2/models/books", "/v2/models/books/ready"]
    with running(home, api_key="s3cret") as base:
        without = {path: call(f"{base}{path}")[0] for path in guarded + ["/v2/health/live", "/v2/health/ready"]}
        with_key = {path: call(f"{base}{path}", headers=auth)[0] for path in guarded}
        infer = call(f"{base}/v2/models/books/infer", infer_body(toy_samples(1, domains=("books",))))[0]
    assert without == {**{path: 401 for path in guarded}, "/v2/health/live": 200, "/v2/health/ready": 200}
    assert with_key == {path: 200 for path in guarded} and infer == 401


def test_serve_refuses_bf16_with_int8_before_loading_anything(home):
    result = CliRunner().invoke(cli_app, ["serve", "--home", str(home), "--precision", "bf16", "--quantize", "int8"])
    assert result.exit_code == 1 and "cannot be combined with --precision bf16" in result.output
