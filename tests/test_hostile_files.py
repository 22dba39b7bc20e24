"""Hostile files and bodies, round two (issue 22): no freeze, no silent vanishing, no traceback, no NaN.

One test (or parametrised group) per class of the red-team report: YAML bombs and non-UTF-8 records, type
garbage in records and plugin registrations, HTTP bodies, `data prepare amazon2018`, over-long numbers,
domain names with spaces, tampered DSNs and cores, the retirement grace period, a full disk, live reload of
a truncated core, and the smaller ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import toy_samples
from test_plugins import FakeEntryPoint, installed
from unictr_cli.main import app
from unictr_core.adapters.amazon2018 import prepare_amazon2018
from unictr_core.config import ServeSettings
from unictr_core.data import yaml_io
from unictr_core.data.data_io import read_samples, write_samples
from unictr_core.data.files import file_sha256
from unictr_core.data.schema import DataError
from unictr_core.hookspecs import hookimpl
from unictr_core.modeling.predict import NonFiniteOutput, Predictions, predict_samples, prediction_records
from unictr_core.plugins import DomainSpec
from unictr_core.serving.app import create_app
from unictr_core.serving.state import LiveRegistry
from unictr_core.store import artifact, snapshots
from unictr_core.store.layout import ArtifactError
from unictr_core.store.loading import load_model
from unictr_core.store.records import core_identity, fingerprint_of
from unictr_core.store.registry import Registry

runner = CliRunner()
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                    f"*{chr(97 + i)}]" for i in range(9)]) + "\n"


def live_path(path: Path) -> Path:
    return Path(os.path.realpath(path))


def replace_file(path: Path, data: bytes) -> None:
    """Replace a file of a generation (hard-linked with others: unlink first, never write into it)."""
    path = live_path(path)
    path.unlink()
    path.write_bytes(data)


def edit_record(path: Path, **changes) -> None:
    record = yaml.safe_load(live_path(path).read_text())
    record.update(changes)
    replace_file(path, yaml.safe_dump(record).encode())


def listing(home: Path) -> dict:
    result = runner.invoke(app, ["domain", "list", "--json", "--home", str(home)])
    assert result.exit_code == 0 and result.exception is None, result.output
    return json.loads(result.stdout)


def status_of(home: Path) -> dict[str, tuple[str, str]]:
    return {d["name"]: (d["status"], d["problem"] or "") for d in listing(home)["domains"]}


@contextlib.contextmanager
def served(home: Path, **options):
    """The app in FastAPI's test client, once its first state is loaded."""
    with TestClient(create_app(ServeSettings(home=home, poll_interval_s=60, **options))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client


def predict_cli(home: Path, tmp_path: Path, domains=("books", "movies", "music")):
    rows = tmp_path / "rows.jsonl"
    write_samples(rows, toy_samples(6, seed=3, domains=domains))
    return runner.invoke(app, ["predict", "--home", str(home), "--input", str(rows)])


# ----------------------------------------------------------------------------- 1, 2: YAML bombs, non-UTF-8
def test_a_yaml_alias_bomb_is_refused_at_once_and_only_its_bundle_is_broken(home):
    replace_file(home / "domains" / "books" / "domain.yaml", BOMB.encode())
    started = time.perf_counter()
    statuses = status_of(home)
    assert time.perf_counter() - started < 10
    assert statuses["books"][0] == "broken" and "anchor or alias" in statuses["books"][1]
    assert statuses["movies"][0] == statuses["music"][0] == "ready"
    shown = runner.invoke(app, ["domain", "show", "books", "--home", str(home)])
    assert shown.exit_code == 0 and "broken" in shown.output and "anchor or alias" in shown.output


@pytest.mark.parametrize("text, reason", [
    ("a: 1\n" + "x: " + "[" * 40 + "]" * 40 + "\n", "nested deeper"),
    ("a: &x 1\nb: 2\n", "anchor or alias"),
    ("a: !!python/object:os.system echo\n", "not valid YAML"),
    ("a: " + "x" * (yaml_io.MAX_BYTES + 1), "larger than the limit"),
])
def test_the_yaml_reader_refuses_hostile_files_in_one_line(tmp_path, text, reason):
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason) as info:
        yaml_io.read_file(path, "test file")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_non_utf8_domain_yaml_breaks_its_bundle_only_everywhere(home, tmp_path):
    path = home / "domains" / "music" / "domain.yaml"
    replace_file(path, b"\xff" + live_path(path).read_bytes())
    statuses = status_of(home)
    assert statuses["music"][0] == "broken" and "not UTF-8" in statuses["music"][1]
    assert statuses["books"][0] == "ready"
    table = runner.invoke(app, ["domain", "list", "--home", str(home)])
    assert table.exit_code == 0 and "domain 'music' (local) is broken: " in table.stderr
    assert "not UTF-8" in table.stderr
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 0 and "music" in result.stderr and "not UTF-8" in result.stderr
    predicted = {(r["domain"], r["predicted_by"]) for r in map(json.loads, result.stdout.splitlines())}
    assert ("books", "dsn") in predicted and ("music", "general (zero-shot)") in predicted
    live = LiveRegistry(home)
    assert live.reload() and "books" in live.state.model.dsns and "music" not in live.state.model.dsns
    assert any("not UTF-8" in note for note in live.state.notes)


# ----------------------------------------------------------------------------- 3: type garbage, plugins
@pytest.mark.parametrize("changes, reason", [
    ({"metrics": 5}, "field 'metrics': expected a mapping"),
    ({"template": "a string"}, "field 'template': expected a mapping"),
    ({"name": ["books"]}, "field 'name': expected text"),
    ({"dsn_sha256": 12}, "field 'dsn_sha256': expected text"),
    ({"dsn": None}, "lacks 'dsn'"),  # every bundle records its kind of DSN: no default for a missing entry
    ({"dsn": {"residual": True}}, "field 'dsn': expected true or false for each of residual, stats, calibration"),
    ({"dsn": {"residual": "no", "stats": False, "calibration": False}}, "field 'dsn': expected true or false"),
])
def test_type_garbage_in_domain_yaml_is_a_one_line_broken_reason(home, tmp_path, changes, reason):
    edit_record(home / "domains" / "books" / "domain.yaml", **changes)
    statuses = status_of(home)
    assert statuses["books"][0] == "broken" and reason in statuses["books"][1]
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 0 and reason in result.stderr and "Traceback" not in result.output


def test_nan_metrics_never_reach_json(home):
    path = home / "domains" / "books" / "domain.yaml"
    text = live_path(path).read_text().replace("metrics:", "metrics:\n  nan_metric: .nan\n  inf_metric: -.inf", 1)
    replace_file(path, text.encode())
    books = next(d for d in listing(home)["domains"] if d["name"] == "books")
    assert books["status"] == "ready" and books["metrics"]["nan_metric"] is None


@pytest.mark.parametrize("architecture", [{"tower_dims": "abc"}, "garbage", {"max_length": [1]}, {"nope": 1}])
def test_garbage_architecture_in_the_manifest_is_one_line_and_domains_still_list(home, tmp_path, architecture):
    path = home / "core" / "manifest.yaml"
    manifest = yaml.safe_load(live_path(path).read_text())
    manifest["architecture"] = architecture
    manifest["fingerprint"] = fingerprint_of(core_identity(manifest))  # a tamperer who knows the format
    replace_file(path, yaml.safe_dump(manifest).encode())
    data = listing(home)
    assert any("the core is broken" in p and "architecture" in p for p in data["problems"])
    assert {d["name"] for d in data["domains"]} >= {"books", "movies", "music"}
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 1 and "field 'architecture'" in result.output and "Traceback" not in result.output


def test_a_manifest_without_its_dsn_layout_is_refused_as_damaged(home):
    path = home / "core" / "manifest.yaml"
    manifest = yaml.safe_load(live_path(path).read_text())
    del manifest["dsn_layout"]  # not part of the fingerprint: the manifest's schema refuses it
    replace_file(path, yaml.safe_dump(manifest).encode())
    assert any("the core is broken" in p and "'dsn_layout'" in p for p in listing(home)["problems"])


class GarbageSpecs:
    @hookimpl
    def register_domains(self, register):
        register(DomainSpec(name="bad_bundle", bundle=12345))
        register(DomainSpec(name="bad_template", template="a string template"))
        register(DomainSpec(name="bad_description", description=object()))
        register(DomainSpec(name="fine_one", description="a good one"))


class RaisingSpecs:
    @hookimpl
    def register_domains(self, register):
        raise RuntimeError("the hook exploded")


@pytest.fixture
def garbage_plugins(monkeypatch):
    yield from installed(monkeypatch, [FakeEntryPoint("garbage_specs", GarbageSpecs, "unictr-garbage-specs"),
                                       FakeEntryPoint("raising_specs", RaisingSpecs, "unictr-raising-specs")])


def test_garbage_domain_specs_are_listed_broken_and_a_raising_hook_is_visible_everywhere(garbage_plugins, home,
                                                                                          tmp_path):
    data = listing(home)
    statuses = {d["name"]: (d["status"], d["problem"]) for d in data["domains"]}
    assert statuses["bad_bundle"][0] == "broken" and "bundle=12345" in statuses["bad_bundle"][1]
    assert statuses["bad_template"][0] == "broken" and "template='a string template'" in statuses["bad_template"][1]
    assert statuses["bad_description"][0] == "broken" and "description=" in statuses["bad_description"][1]
    assert statuses["fine_one"][0] == "zero-shot" and statuses["books"][0] == "ready"
    assert any("raising_specs" in p and "the hook exploded" in p for p in data["problems"])
    text = runner.invoke(app, ["domain", "list", "--home", str(home)])
    assert text.exit_code == 0 and "raising_specs" in text.stderr
    shown = runner.invoke(app, ["domain", "show", "from_raising", "--home", str(home)])
    assert shown.exit_code == 1 and "unknown domain" in shown.output and "raising_specs" in shown.output
    result = predict_cli(home, tmp_path, domains=("books", "bad_bundle"))
    assert result.exit_code == 0 and "raising_specs" in result.stderr and "bundle=12345" in result.stderr
    with served(home) as client:
        domains = client.get("/v1/domains").json()
        metrics = client.get("/metrics").text
    assert any("raising_specs" in p for p in domains["problems"])
    assert 'unictr_domains{status="broken"} 3.0' in metrics and "unictr_registry_problems" in metrics


# ----------------------------------------------------------------------------- 4, 7: HTTP bodies
def test_hostile_http_bodies_get_4xx_one_line_never_500(home):
    deep = b'{"samples": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    row = {"domain": "books", "user_id": "u1", "item_id": "i1"}
    bodies = {
        "deep": deep,
        "long int in a row": json.dumps({"samples": [row]}).replace('"i1"', "9" * 5000).encode(),
        "long int as domain": b'{"samples": [{}], "domain": ' + b"1" * 5000 + b"}",
        "long int as a sample": b'{"samples": [' + b"7" * 4400 + b"]}",
        "domain with newline": json.dumps({"samples": [{**row, "domain": "books\n"}]}).encode(),
        "domain with spaces": json.dumps({"samples": [{**row, "domain": " books "}]}).encode(),
        "huge title": json.dumps({"samples": [{**row, "title": "x" * 200_000}]}).encode(),
        "NaN": b'{"samples": [{"domain": "books", "user_id": "u1", "item_id": "i1", "price": NaN}]}',
    }
    with served(home, max_body_bytes=1 << 21) as client:
        answers = {name: client.post("/v1/predict", content=body) for name, body in bodies.items()}
        assert client.get("/healthz").status_code == 200
    for name, answer in answers.items():
        assert answer.status_code in (400, 422), (name, answer.status_code, answer.text[:200])
        assert "\n" not in answer.json()["error"] and "Traceback" not in answer.json()["error"]
    assert "field 'domain'" in answers["domain with newline"].json()["error"]
    assert "field 'item_id'" in answers["long int in a row"].json()["error"]


# ----------------------------------------------------------------------------- 5: data prepare amazon2018
def amazon_raw(folder: Path, extra_lines: list[str], reviews: int = 40) -> Path:
    raw = folder / "raw"
    raw.mkdir()
    lines = [json.dumps({"reviewerID": f"u{i % 7}", "asin": f"a{i % 11}", "overall": 1 + i % 5,
                         "unixReviewTime": 1_500_000_000 + i}) for i in range(reviews)]
    with gzip.open(raw / "Books_5.json.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines + extra_lines) + "\n")
    return raw


@pytest.mark.parametrize("line, field, reason", [
    ('{"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": 1, "x": ' + "[" * 50_000 + "]" * 50_000
     + "}", None, "nested"),
    ('{"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": ' + "9" * 5000 + "}", "unixReviewTime",
     "64 digits"),
    ('{"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": ' + "9" * 400 + "}", "unixReviewTime",
     "64 digits"),
    ('{"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": 1, "price": 1e999}', "price", "finite"),
    ('{"reviewerID": "u1\\ud800", "asin": "a1", "overall": 5, "unixReviewTime": 1}', "reviewerID",
     "lone surrogate"),
])
def test_hostile_amazon_lines_name_file_line_and_field(tmp_path, line, field, reason):
    raw = amazon_raw(tmp_path, [line])
    with pytest.raises(DataError, match=reason) as info:
        prepare_amazon2018(raw, tmp_path / "out")
    assert info.value.line == 41 and info.value.field == field and "Books_5.json.gz" in str(info.value)


def test_amazon_prices_that_are_junk_are_no_price_and_a_blank_line_bomb_stops_early(tmp_path):
    from unictr_core.adapters.amazon2018 import MAX_BLANK_RUN, parse_price

    assert parse_price(10.0 ** 300) is None and parse_price("9" * 400) is None and parse_price("$25.00") == "25.00"
    raw = amazon_raw(tmp_path, ["\n" * (MAX_BLANK_RUN * 3)])
    started = time.perf_counter()
    with pytest.raises(DataError, match="blank lines in a row"):
        prepare_amazon2018(raw, tmp_path / "out")
    assert time.perf_counter() - started < 10


# ----------------------------------------------------------------------------- 6, 7, 12: rows of files
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_5000_digit_timestamp_names_file_line_and_field(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        path.write_text("domain,user_id,item_id,timestamp\nbooks,u1,i1,1\nbooks,u1,i2," + "9" * 5000 + "\n")
    else:
        path.write_text('{"domain": "books", "user_id": "u1", "item_id": "i1"}\n'
                        '{"domain": "books", "user_id": "u1", "item_id": "i2", "timestamp": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataError) as info:
        read_samples(path)
    assert (info.value.line, info.value.field) == (3 if suffix == ".csv" else 2, "timestamp")
    assert "digits" in str(info.value) and "4300" not in str(info.value)


@pytest.mark.parametrize("domain", ["books\n", " books ", "books "])
def test_a_row_domain_is_taken_exactly_as_written(tmp_path, domain):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"domain": domain, "user_id": "u1", "item_id": "i1"}) + "\n")
    with pytest.raises(DataError) as info:
        read_samples(path)
    assert info.value.field == "domain"


def test_field_sizes_are_bounded_and_an_unterminated_csv_quote_is_refused(tmp_path):
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"domain": "books", "user_id": "u1", "item_id": "i1", "title": "x" * 5_000_000}))
    started = time.perf_counter()
    with pytest.raises(DataError, match="more than the limit") as info:
        read_samples(huge)
    assert info.value.field == "title" and time.perf_counter() - started < 5
    quote = tmp_path / "quote.csv"
    quote.write_text('domain,user_id,item_id,title\nbooks,u1,i1,"never closed\nbooks,u2,i2,x\n')
    with pytest.raises(DataError, match="malformed CSV.*unterminated") as info:
        read_samples(quote)
    assert info.value.line == 2


def test_domain_add_on_a_file_of_another_domain_says_what_the_file_holds(home, tmp_path):
    rows = tmp_path / "movies.jsonl"
    write_samples(rows, [s for s in toy_samples(8, seed=2, domains=("movies",))][:2])
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(rows), "--home", str(home)])
    assert result.exit_code == 1 and "the file holds movies: 2 rows" in result.output
    assert "taken as 'toys'" in result.output


# ----------------------------------------------------------------------------- 8: tampered weights
def reseal(bundle: Path, state: dict) -> None:
    """New DSN weights with their SHA-256 recorded beside them, as a tamperer who knows the format would."""
    scratch = bundle.parent.parent / "scratch.safetensors"
    save_file(state, str(scratch))
    replace_file(bundle / "dsn.safetensors", scratch.read_bytes())
    scratch.unlink()
    edit_record(bundle / "domain.yaml", dsn_sha256=file_sha256(live_path(bundle / "dsn.safetensors")))


def dsn_state(home: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(live_path(home / "domains" / name / "dsn.safetensors")))


def _missing(state):
    return {k: v for k, v in list(state.items())[1:]}


def _extra(state):
    return {**state, "extra.weight": torch.zeros(2)}


def _int64(state):
    return {k: v.to(torch.int64) for k, v in state.items()}


def _nan(state):
    return {k: torch.full_like(v, math.nan) if i == 0 else v for i, (k, v) in enumerate(state.items())}


def _shape(state):
    first = next(iter(state))
    return {**state, first: torch.zeros(3)}


@pytest.mark.parametrize("tamper, reason", [(_missing, "missing"), (_extra, "unexpected extra.weight"),
                                            (_int64, "expected a float tensor"), (_nan, "NaN or infinite"),
                                            (_shape, "has shape [3]")])
def test_tampered_dsns_are_broken_in_the_listing_and_named_by_predict(home, tmp_path, tamper, reason):
    reseal(home / "domains" / "books", tamper(dsn_state(home, "books")))
    statuses = status_of(home)
    assert statuses["books"][0] == "broken" and reason in statuses["books"][1]
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 0 and reason in result.stderr
    assert "NaN" not in result.stdout
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(0 <= r["probability"] <= 1 for r in records)


def test_each_kind_of_dsn_is_checked_against_its_own_layout(home, toys_file):
    """A DSN with count statistics (the default of `domain add`) lists ready; a bundle whose record claims a
    kind of DSN its weights are not is broken (the manifest records one layout per kind)."""
    added = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                "--epochs", "1"])
    assert added.exit_code == 0, added.output
    record = yaml.safe_load(live_path(home / "domains" / "toys" / "domain.yaml").read_text())
    assert record["dsn"]["stats"] is True
    statuses = status_of(home)
    assert statuses["toys"][0] == "ready" and statuses["books"][0] == "ready"
    books = yaml.safe_load(live_path(home / "domains" / "books" / "domain.yaml").read_text())
    edit_record(home / "domains" / "books" / "domain.yaml", dsn={**books["dsn"], "stats": True})
    status, problem = status_of(home)["books"]
    assert status == "broken" and "do not fit the core's architecture" in problem


def test_a_foreign_core_with_its_sha_updated_is_refused(home, tmp_path):
    core = home / "core"
    state = {k: torch.zeros_like(v) for k, v in dsn_state(home, "books").items()}  # any other weights
    save_file(state, str(tmp_path / "foreign.safetensors"))
    replace_file(core / "core.safetensors", (tmp_path / "foreign.safetensors").read_bytes())
    edit_record(core / "manifest.yaml", core_sha256=file_sha256(live_path(core / "core.safetensors")))
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 1 and "fingerprint does not match" in result.output
    assert any("the core is broken" in p for p in listing(home)["problems"])


def test_no_output_ever_holds_nan():
    samples = toy_samples(2)
    predictions = Predictions(probs=[0.5, math.nan], general_probs=[0.5, 0.5], zero_shot=[False, False])
    with pytest.raises(NonFiniteOutput, match="row 2"):
        prediction_records(samples, predictions)


# ----------------------------------------------------------------------------- 9: retirement grace period
def test_the_retirement_time_is_set_before_the_switch_and_a_late_reader_is_told_to_retry(home, monkeypatch):
    old = snapshots.snapshot(home)
    os.utime(old, (0, 0))  # created long ago
    seen = {}

    def at_step(what: str) -> None:
        if what.startswith("switch current"):
            seen["age"] = time.time() - old.stat().st_mtime

    monkeypatch.setattr(snapshots, "crash_hook", at_step)
    reader = Registry.open(home)  # a reader that resolved the old snapshot
    with snapshots.transaction(home):
        pass
    assert seen["age"] < 60  # a crash right at the switch cannot leave the old generation looking long retired
    monkeypatch.setattr(snapshots, "crash_hook", None)
    shutil.rmtree(old)  # its grace period ran out
    with pytest.raises(snapshots.SnapshotRetired, match="retired by a newer write.*retry"):
        load_model(home, registry=reader)


def test_a_leftover_deleting_folder_is_named_an_interrupted_delete(home):
    leftover = home / snapshots.GENERATIONS / ".deleting-g000000-1"
    leftover.mkdir()
    notes = snapshots.recover(home)
    assert any("interrupted while deleting" in n for n in notes) and not leftover.exists()
    assert not any("never committed" in n for n in notes)


# ----------------------------------------------------------------------------- 10: a full disk
def test_a_full_disk_during_domain_add_is_one_line_with_the_path_and_leaves_the_home(home, toys_file, monkeypatch):
    from safetensors import SafetensorError

    before = {p: p.read_bytes() for p in live_path(home / "domains").rglob("*") if p.is_file()}

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message:\n'
                              '"No space left on device" })')

    monkeypatch.setattr(artifact, "save_file", full_disk)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "1"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot write" in error[0] and "dsn.safetensors" in error[0]
    assert "No space left on device" in error[0] and "Traceback" not in result.output
    assert Registry.open(home).get("toys") is None
    assert {p: p.read_bytes() for p in live_path(home / "domains").rglob("*") if p.is_file()} == before


def test_a_refused_write_is_one_line_with_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError) as info:
        artifact.write_file(blocker / "x.yaml", b"x")  # what a folder without write permission gives too
    assert str(info.value) == f"cannot write {blocker / 'x.yaml'}: Not a directory"


# ----------------------------------------------------------------------------- 11: live reload re-verifies
def test_live_reload_refuses_a_truncated_core_under_an_unchanged_manifest(home):
    live = LiveRegistry(home)
    assert live.reload()
    with snapshots.transaction(home) as txn:
        weights = txn.root / "core" / "core.safetensors"
        data = weights.read_bytes()
        weights.unlink()
        weights.write_bytes(data[: len(data) // 2])
    assert live.changed() and not live.reload()
    assert "core weights" in live.last_error and "SHA-256" in live.last_error
    assert live.state.generation == 1


def test_movielens_numbers_beyond_64_bits_name_file_line_and_field(tmp_path):
    from unictr_core.adapters.movielens import read_ratings

    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\t1e300\n1\t3\t4\t"
                    + "9" * 5000 + "\n")
    with pytest.raises(DataError, match="at most 64 bits") as info:
        read_ratings(path)
    assert (info.value.line, info.value.field) == (2, "timestamp")


@pytest.mark.parametrize("template, reason", [
    ({"parts": ["{title[99]}"]}, "must be a plain {name}"),
    ({"parts": ["{title.__class__}"]}, "must be a plain {name}"),
    ({"parts": ["{title:>999999999}"]}, "must be a plain {name}"),
    ({"parts": ["{}"]}, "must be a plain {name}"),
    ({"history_separator": 5}, "'history_separator' must be text"),
    ({"history_item": "{text!r}"}, "must be a plain {name}"),
])
def test_a_hostile_template_in_domain_yaml_is_a_broken_reason_not_a_crash_at_render(home, tmp_path, template,
                                                                                    reason):
    edit_record(home / "domains" / "books" / "domain.yaml", template=template)
    statuses = status_of(home)
    assert statuses["books"][0] == "broken" and reason in statuses["books"][1]
    result = predict_cli(home, tmp_path)
    assert result.exit_code == 0 and "Traceback" not in result.output


@pytest.mark.parametrize("training", [{"history": 5}, {"history": [{"epoch": "one"}]},
                                      {"history": [{"epoch": 1, "train_loss": "low"}]}])
def test_garbage_training_history_is_a_broken_reason_and_show_never_crashes(home, training):
    edit_record(home / "domains" / "books" / "domain.yaml", training=training)
    assert status_of(home)["books"][0] == "broken"
    shown = runner.invoke(app, ["domain", "show", "books", "--home", str(home)])
    assert shown.exit_code == 0 and "training.history" in shown.output, shown.output
