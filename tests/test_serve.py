"""`unictr serve`: the real server on a free 127.0.0.1 port, spoken to over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import uvicorn  # the extra 'serve', part of the 'test' extra
from typer.testing import CliRunner

from conftest import build_home, toy_samples
from unictr_cli.main import app as cli_app
from unictr_core.store import snapshots as home_store
from unictr_core.data.data_io import read_samples
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry, state_token
from unictr_core.serving.app import ServeSettings, create_app
from unictr_core.serving.batcher import DynamicBatcher
from unictr_core.serving.state import LiveRegistry

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body=None, headers=None, raw: bytes = None) -> tuple[int, dict | str]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if call(f"{base}/readyz")[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{base} not ready after {timeout} s")


@contextlib.contextmanager
def running(home: Path, **options):
    """The real ASGI server (uvicorn) in a thread, bound to a free 127.0.0.1 port."""
    settings = ServeSettings(home=home, port=free_port(), poll_interval_s=0.1, **options)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    try:
        wait_ready(base)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def rows(samples) -> list[dict]:
    return [s.to_dict() for s in samples]


def test_predict_answers_with_dsn_or_zero_shot_and_matches_the_library(home):
    samples = toy_samples(12, seed=5, domains=("books", "music", "toys"))
    with running(home) as base:
        assert call(f"{base}/healthz") == (200, {"status": "ok"})
        status, answer = call(f"{base}/v1/predict", {"samples": rows(samples)})
    assert status == 200
    model, _ = load_model(home)
    expected = predict_samples(model, samples)
    fingerprint = Registry(home).core_fingerprint
    assert answer["core_fingerprint"] == fingerprint and answer["generation"] == 1
    got = answer["predictions"]
    assert [p["item_id"] for p in got] == [s.item_id for s in samples]
    assert [p["predicted_by"] for p in got] == ["general (zero-shot)" if s.domain == "toys" else "dsn"
                                                for s in samples]
    assert all(p["core_fingerprint"] == fingerprint for p in got)
    np.testing.assert_allclose([p["probability"] for p in got], expected.probs, atol=1e-5)


def test_domain_override_predicts_every_row_as_that_domain(home):
    samples = toy_samples(4, seed=6, domains=("books",))
    with running(home) as base:
        status, answer = call(f"{base}/v1/predict", {"samples": rows(samples), "domain": "toys"})
    assert status == 200
    assert {(p["domain"], p["predicted_by"]) for p in answer["predictions"]} == {("toys", "general (zero-shot)")}


def test_bad_bodies_get_the_cli_message_and_a_4xx_never_a_traceback(home, tmp_path):
    bad_row = {"domain": "books", "user_id": "u1", "item_id": "i1", "label": "yes"}
    (tmp_path / "rows.jsonl").write_text(json.dumps(bad_row) + "\n")
    with pytest.raises(ValueError) as cli_error:
        read_samples(tmp_path / "rows.jsonl")
    big = {"samples": rows(toy_samples(5))}
    with running(home, max_request_rows=3, max_body_bytes=4096) as base:
        url = f"{base}/v1/predict"
        answers = {
            "label": call(url, {"samples": [bad_row]}),
            "missing": call(url, {"samples": [{"domain": "books", "user_id": "u1"}]}),
            "json": call(url, raw=b'{"samples": [{"domain": '),
            "not object": call(url, {"samples": [1]}),
            "no samples": call(url, {"rows": []}),
            "domain": call(url, {"samples": [bad_row], "domain": "Not A Domain"}),
            "rows": call(url, big),
            "bytes": call(url, raw=b" " * 5000),
            "path": call(f"{base}/v1/nothing"),
        }
    statuses = {key: status for key, (status, _) in answers.items()}
    assert statuses == {"label": 422, "missing": 422, "json": 400, "not object": 422, "no samples": 422,
                        "domain": 422, "rows": 413, "bytes": 413, "path": 404}
    messages = {key: body["error"] for key, (_, body) in answers.items()}
    assert messages["label"] == str(cli_error.value).replace(f"{tmp_path / 'rows.jsonl'}, line 1",
                                                             "request body, row 1")
    assert messages["missing"] == "request body, row 1, field 'item_id': required field is missing"
    assert messages["json"].startswith("request body: malformed JSON")
    assert "3 per request" in messages["rows"] and "4096" in messages["bytes"]
    assert not any("Traceback" in m or "\n" in m for m in messages.values())


def test_domains_metrics_and_api_key(home, monkeypatch):
    with running(home, api_key="s3cret") as base:
        assert call(f"{base}/v1/domains")[0] == 401
        assert call(f"{base}/metrics")[0] == 401
        assert call(f"{base}/readyz")[0] == 200  # probes stay open
        auth = {"Authorization": "Bearer s3cret"}
        assert call(f"{base}/v1/domains", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, domains = call(f"{base}/v1/domains", headers=auth)
        assert status == 200
        assert domains["domains"] == Registry.open(home).to_dict()["domains"]
        assert domains["serving"]["state"]["dsns"] == ["books", "movies", "music"]
        samples = toy_samples(6, seed=2, domains=("books", "toys"))
        assert call(f"{base}/v1/predict", {"samples": rows(samples)}, headers=auth)[0] == 200
        status, text = call(f"{base}/metrics", headers=auth)
    assert status == 200
    books = sum(s.domain == "books" for s in samples)
    assert f'unictr_rows_total{{domain="books",predicted_by="dsn"}} {books:.1f}' in text
    # toys is not a registered domain: its rows are counted under one bounded label
    assert f'unictr_rows_total{{domain="(other)",predicted_by="general (zero-shot)"}} {6 - books:.1f}' in text
    assert 'unictr_request_errors_total{path="/v1/domains",status="401"} 2.0' in text
    assert "unictr_registry_generation 1.0" in text and "unictr_batch_size_rows_count" in text
    assert 'unictr_request_latency_seconds_count{path="/v1/predict"} 1.0' in text


def test_state_token_changes_only_with_commits(home, toys_file):
    token = state_token(home)
    assert state_token(home) == token
    Registry.open(home)  # reading changes nothing
    assert state_token(home) == token
    staging = home / home_store.GENERATIONS / ".staging-123-456"  # a write in progress is not a commit
    staging.mkdir()
    assert state_token(home) == token
    shutil.rmtree(staging)
    result = runner.invoke(cli_app, ["domain", "remove", "music", "--home", str(home), "--yes"])
    assert result.exit_code == 0, result.output
    assert state_token(home) != token


def test_the_served_generation_is_the_number_of_the_generation_on_disk(home, toys_file):
    result = runner.invoke(cli_app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                     "--epochs", "1"])
    assert result.exit_code == 0, result.output
    live = LiveRegistry(home)  # a server started after the add: its first state is the home's second generation
    assert live.reload()
    assert os.readlink(home / "current") == "generations/g000002"
    assert live.state.generation == 2 and live.state.to_dict()["generation"] == 2


def test_requests_keep_their_state_and_a_broken_bundle_or_core_keeps_the_old_one(home, toys_file):
    live = LiveRegistry(home)
    assert live.reload()
    first = live.state
    result = runner.invoke(cli_app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                     "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert live.changed() and live.reload()
    second = live.state
    assert second.generation == 2 and "toys" in second.model.dsns
    assert "toys" not in first.model.dsns  # a request that took the first state still answers zero-shot
    assert second.model.general is first.model.general  # the core is shared, not reloaded
    toys = toy_samples(4, seed=9, domains=("toys",))
    assert predict_samples(first.model, toys).zero_shot.all()
    assert not predict_samples(second.model, toys).zero_shot.any()

    # a broken new bundle for toys, committed as a writer commits (a new generation of the home): toys keeps its DSN
    with home_store.transaction(home) as txn:
        weights = txn.root / "domains" / "toys" / "dsn.safetensors"
        weights.unlink()  # a hard link shared with the current generation: replace it, never write into it
        weights.write_bytes(b"not safetensors")
    assert live.changed() and live.reload()
    third = live.state
    assert third.model.dsns["toys"] is second.model.dsns["toys"]
    assert any("toys" in note and "previous DSN" in note for note in third.notes)
    assert any("toys" in note and "SHA-256" in note for note in third.notes)

    # a broken core: the reload fails, the old state keeps serving, the error is reported once
    with home_store.transaction(home) as txn:
        manifest = txn.root / "core" / "manifest.yaml"
        manifest.unlink()
        manifest.write_text("format_version: [")
    assert live.changed() and not live.reload()
    assert live.state is third and "core manifest" in live.last_error
    assert not live.changed()  # the same broken commit is not retried at every poll


def test_a_home_without_core_is_not_ready_and_is_left_untouched(tmp_path):
    empty = tmp_path / "nothing-here"
    live = LiveRegistry(empty)
    assert not live.reload()
    assert live.state is None and "no trained core" in live.last_error
    assert not live.changed()  # reported once, retried only when the home changes
    assert not empty.exists()


def test_a_slow_prediction_gets_504(home):
    with running(home, request_timeout_s=1e-4) as base:
        status, answer = call(f"{base}/v1/predict", {"samples": rows(toy_samples(3))})
        assert call(f"{base}/healthz")[0] == 200  # the server goes on
    assert status == 504 and "--request-timeout" in answer["error"]


def test_a_retrained_core_is_loaded_live(home, tiny_bert):
    live = LiveRegistry(home)
    assert live.reload()
    first = live.state
    build_home(tiny_bert, home, seed=1)  # `unictr train` again: a new core and new bundles
    assert live.changed() and live.reload()
    second = live.state
    assert second.core_fingerprint == Registry(home).core_fingerprint != first.core_fingerprint
    assert sorted(second.model.dsns) == ["books", "movies", "music"] and second.notes == ()
    assert second.model.general is not first.model.general


def test_dynamic_batcher_merges_concurrent_requests(home):
    live = LiveRegistry(home)
    live.reload()
    sizes = []
    batcher = DynamicBatcher(max_batch_size=8, max_wait_ms=300, on_batch=sizes.append)
    samples = toy_samples(10, seed=4)
    futures = [batcher.submit(live.state, samples[i:i + 2]) for i in range(0, 10, 2)]  # queued before it starts
    batcher.start()
    try:
        results = [f.result(timeout=30) for f in futures]
    finally:
        batcher.stop()
    assert sizes == [8, 2]  # four 2-row requests fill one batch of 8 rows; the fifth waits, then goes alone
    alone = predict_samples(live.state.model, samples)
    np.testing.assert_allclose(np.concatenate([r.probs for r in results]), alone.probs, atol=1e-5)


def test_unictr_serve_picks_up_a_live_add_and_remove_from_another_process(home, toys_file):
    port = free_port()
    env = {**os.environ, "SERVE_TEST_KEY": "k3y", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "unictr_cli.main", "serve", "--home", str(home), "--port",
                               str(port), "--poll-interval", "0.1", "--api-key-env", "SERVE_TEST_KEY", "--threads",
                               "1", "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k3y"}
    toys = {"samples": rows(toy_samples(3, seed=8, domains=("toys",)))}

    def answered_by() -> set:
        status, answer = call(f"{base}/v1/predict", toys, headers=auth)
        assert status == 200, answer
        return {p["predicted_by"] for p in answer["predictions"]}

    def wait_for(predicted_by: str) -> float:
        started = time.monotonic()
        while answered_by() != {predicted_by}:
            assert time.monotonic() - started < 10, f"still not '{predicted_by}' after 10 s"
            time.sleep(0.05)
        return time.monotonic() - started

    try:
        wait_ready(base)
        assert answered_by() == {"general (zero-shot)"}
        result = runner.invoke(cli_app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                         "--epochs", "1"])  # this test process is not the server process
        assert result.exit_code == 0, result.output
        wait_for("dsn")
        status, domains = call(f"{base}/v1/domains", headers=auth)
        assert status == 200 and domains["serving"]["state"]["generation"] == 2
        assert "toys" in domains["serving"]["state"]["dsns"]
        result = runner.invoke(cli_app, ["domain", "remove", "toys", "--home", str(home), "--yes"])
        assert result.exit_code == 0, result.output
        wait_for("general (zero-shot)")
        assert call(f"{base}/readyz")[1]["generation"] == 3
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert server.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM after a graceful stop
    assert "Traceback" not in output


def test_serve_refuses_a_missing_api_key_variable(home):
    result = runner.invoke(cli_app, ["serve", "--home", str(home), "--api-key-env", "UNICTR_TEST_NO_SUCH_VAR"])
    assert result.exit_code == 1
    assert "UNICTR_TEST_NO_SUCH_VAR is not set or empty" in result.output
