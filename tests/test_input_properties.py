"""Property tests (hypothesis): any JSON value in any field gives a prediction or a one-line error (issue 15).

The row reader and the whole predict path (read, render, tokenize, shorten, predict)
get arbitrary JSON values (lone surrogates, deep nesting, NaN/Infinity, huge
numbers and strings) in every field; each example must end, within a time bound,
in either valid probabilities or a :class:`DataError` naming the file, the line
and (for a field's value) the field. History shortening is O(n log n).
"""

from __future__ import annotations

import csv
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import build_home
from unictr_core.modeling.batching import EncodedSamples
from unictr_core.data.data_io import read_samples
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model
from unictr_core.data.schema import CORE_FIELDS, DataError, Sample

FIELDS = [f for f in CORE_FIELDS if f != "extra"] + ["extra", "color"]
SURROGATE_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()),
                         max_size=40)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | SURROGATE_TEXT
           | st.sampled_from(["books", "music", "u1", "", " ", "0", "1", "true", "NaN", "inf", "1e999"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SURROGATE_TEXT, inner,
                                                                                           max_size=4),
                      max_leaves=12)
TEXT = st.text(max_size=30)
GOOD = st.fixed_dictionaries(
    {"domain": st.sampled_from(["books", "music", "toys"]), "user_id": st.just("u1"), "item_id": st.just("i1")},
    optional={"label": st.sampled_from([0, 1]), "timestamp": st.integers(0, 2**40), "title": TEXT, "brand": TEXT,
              "price": st.sampled_from(["9.99", 25, 3.5]), "history": st.lists(TEXT, max_size=6),
              "extra": st.dictionaries(st.text(max_size=5), TEXT, max_size=2), "color": TEXT})


@st.composite
def rows(draw) -> dict:
    """A valid row with one field (any of them, or a new one) set to any JSON value."""
    row = draw(GOOD)
    row[draw(st.sampled_from(FIELDS) | SURROGATE_TEXT)] = draw(VALUES)
    return row


ROWS = rows()
SETTINGS = dict(deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
BOUND_S = 20.0
DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "x" * 300_000


def write_line(folder: Path, text: str) -> Path:
    path = folder / "rows.jsonl"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_or_error(path: Path) -> list[Sample] | DataError:
    started = time.perf_counter()
    try:
        result: list[Sample] | DataError = read_samples(path)
    except DataError as exc:
        assert str(path) in str(exc) and "line 1" in str(exc) and "\n" not in str(exc), str(exc)
        result = exc
    assert time.perf_counter() - started < BOUND_S
    return result


@settings(max_examples=300, **SETTINGS)
@given(row=ROWS)
@example(row={"domain": "books", "user_id": "u1", "item_id": "i1", "title": "\ud800"})
@example(row={"domain": "books", "user_id": "u1", "item_id": "i1", "price": float("nan")})
@example(row={"domain": "books", "user_id": "u1", "item_id": "i1", "history": [HUGE]})
def test_the_row_reader_accepts_or_names_file_line_and_field(row, tmp_path):
    path = write_line(tmp_path, json.dumps(row))
    result = read_or_error(path)
    if isinstance(result, DataError):
        assert result.line == 1
        if result.field is not None:
            assert result.field in row or result.field in ("extra", "history") or "?" in result.field
    else:
        assert len(result) == 1


@settings(max_examples=100, **SETTINGS)
@given(cells=st.lists(st.text(max_size=30), min_size=4, max_size=4))
def test_the_csv_reader_accepts_or_names_file_line_and_field(cells, tmp_path):
    path = tmp_path / "rows.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["domain", "user_id", "item_id", "history"])
        writer.writerow(cells)
    try:
        read_samples(path)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@pytest.fixture(scope="module")
def model(tiny_bert, tmp_path_factory):
    home = build_home(tiny_bert, tmp_path_factory.mktemp("properties") / "home")
    loaded, _ = load_model(home)
    return loaded


@settings(max_examples=80, **SETTINGS)
@given(row=ROWS)
@example(row={"domain": "books", "user_id": "u1", "item_id": "i1", "title": HUGE})
@example(row={"domain": "books", "user_id": "u1", "item_id": "i1", "history": ["an old book"] * 10_000})
def test_the_whole_predict_path_gives_probabilities_or_a_one_line_error(row, model, tmp_path):
    path = write_line(tmp_path, json.dumps(row))
    started = time.perf_counter()
    result = read_or_error(path)
    event("one-line error" if isinstance(result, DataError) else "predicted")
    if not isinstance(result, DataError):
        predictions = predict_samples(model, result)
        assert 0.0 <= float(predictions.probs[0]) <= 1.0 and 0.0 <= float(predictions.general_probs[0]) <= 1.0
    assert time.perf_counter() - started < BOUND_S


@pytest.mark.parametrize("line", ['{"domain": "books", "user_id": "u1", "item_id": "i1", "x": ' + DEEP + "}",
                                  '{"domain": "books", "user_id": "u1", "item_id": "i1", "price": Infinity}', ""])
def test_deep_nesting_non_finite_numbers_and_empty_files(line, tmp_path):
    path = write_line(tmp_path, line)
    if line:
        assert isinstance(read_or_error(path), DataError)
    else:
        assert read_samples(path) == []
        with pytest.raises(DataError, match="no samples"):
            read_samples(path, require_rows=True)


def linear_shortening(sample: Sample, model) -> list[int]:
    """The one-item-at-a-time shortening that the binary search replaced (reference for equality)."""
    tokenizer, template = model.backbone_info.tokenizer, model.templates.for_domain(sample.domain)
    history = list(sample.history)
    text = template.render(sample, history=history)
    ids = tokenizer(text)["input_ids"]
    while len(ids) > model.config.max_length and history:
        history.pop(0)
        text = template.render(sample, history=history)
        ids = tokenizer(text)["input_ids"]
    if len(ids) > model.config.max_length:
        ids = tokenizer(text, truncation=True, max_length=model.config.max_length)["input_ids"]
    return list(ids)


@settings(max_examples=60, **SETTINGS)
@given(history=st.lists(st.text(alphabet="abc xyz", min_size=0, max_size=12), max_size=40),
       title=st.text(alphabet="abc xyz", max_size=200))
def test_history_shortening_keeps_the_fewest_drops(history, title, model):
    sample = Sample(domain="books", user_id="u1", item_id="i1", title=title or None, history=history)
    encoded = EncodedSamples([sample], model.templates, model.backbone_info.tokenizer, model.config.max_length)
    full = len(model.backbone_info.tokenizer(model.templates.render(sample))["input_ids"])
    event("shortened" if full > model.config.max_length else "fits")
    assert encoded.token_ids[0] == linear_shortening(sample, model)


def test_a_10000_item_history_is_shortened_in_n_log_n(model):
    sample = Sample(domain="books", user_id="u1", item_id="i1", title="now", history=["an old book"] * 10_000)
    calls = 0
    tokenizer = model.backbone_info.tokenizer

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return tokenizer(*args, **kwargs)

    counting.pad_token_id = tokenizer.pad_token_id
    started = time.perf_counter()
    encoded = EncodedSamples([sample], model.templates, counting, model.config.max_length)
    assert len(encoded.token_ids[0]) <= model.config.max_length
    assert calls <= 2 + 15  # one full tokenisation, one without history, about log2(10,000) probes
    assert time.perf_counter() - started < BOUND_S


# ----------------------------------------------------------------------------- the HTTP body (issue 22)
BODY_VALUES = VALUES | st.lists(ROWS, min_size=1, max_size=3)
RAW_BODIES = st.sampled_from([
    b'{"samples": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"samples": [{"domain": "books", "user_id": "u1", "item_id": ' + b"9" * 5000 + b"}]}",
    b'{"samples": [' + b"1" * 4400 + b"]}",
    b'{"samples": [{"domain": "books", "user_id": "u1", "item_id": "i1", "price": NaN}]}',
    b'{"samples": [{"domain": "books\\n", "user_id": "u1", "item_id": "i1"}]}',
    b"\xff\xfe", b"", b"null", b'{"samples": [{}], "domain": 1e999}'])


@st.composite
def bodies(draw) -> bytes:
    """A predict body: hostile raw bytes, or a JSON object whose 'samples' (or 'domain', or another key) holds
    any value, rows with one hostile field included."""
    if draw(st.booleans()):
        return draw(RAW_BODIES)
    body = {"samples": draw(BODY_VALUES)}
    if draw(st.booleans()):
        body[draw(st.sampled_from(["domain", "extra", "samples"]))] = draw(VALUES)
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def client(tiny_bert, tmp_path_factory):
    from fastapi.testclient import TestClient

    from unictr_core.config import ServeSettings
    from unictr_core.serving.app import create_app

    home = build_home(tiny_bert, tmp_path_factory.mktemp("served") / "home")
    with TestClient(create_app(ServeSettings(home=home, poll_interval_s=60, max_body_bytes=1 << 21))) as served:
        deadline = time.monotonic() + 60
        while served.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield served


@settings(max_examples=150, **SETTINGS)
@given(body=bodies())
def test_any_predict_body_gets_probabilities_or_a_one_line_4xx(body, client):
    started = time.perf_counter()
    answer = client.post("/v1/predict", content=body)
    assert time.perf_counter() - started < BOUND_S
    event(str(answer.status_code))
    assert answer.status_code in (200, 400, 413, 422), (answer.status_code, answer.text[:300])
    data = answer.json()
    if answer.status_code == 200:
        assert all(0.0 <= p["probability"] <= 1.0 for p in data["predictions"])
    else:
        assert "\n" not in data["error"] and data["error"].startswith("request body")
    assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------------------- bundle files (issue 22)
RECORD_KEYS = ["format_version", "name", "core_fingerprint", "dsn_sha256", "template", "dsn", "metrics", "training",
               "description", "created"]
YAML_GARBAGE = st.sampled_from([
    b"\xff" + b"name: books\n", b"a: &a [1, 2]\nb: [*a, *a]\n", "x: " + "[" * 60 + "]" * 60,
    b"!!python/object/apply:os.system ['true']\n", b"format_version: 1\nname: books\n  bad: indent\n", b"",
    b"- just\n- a list\n", "format_version: 1\nmetrics: 5\n", "name: \udc80"])


GENUINE: dict[str, str] = {}  # the books bundle's real domain.yaml, each example's starting point


@pytest.fixture(scope="module")
def listed_home(tiny_bert, tmp_path_factory) -> Path:
    home = build_home(tiny_bert, tmp_path_factory.mktemp("listed") / "home")
    GENUINE["record"] = (home / "domains" / "books" / "domain.yaml").read_text()
    return home


@st.composite
def domain_records(draw) -> bytes:
    """The books bundle's domain.yaml with one key set to any value (anchors and all), or hostile raw bytes."""
    if draw(st.booleans()):
        garbage = draw(YAML_GARBAGE)
        return garbage if isinstance(garbage, bytes) else garbage.encode("utf-8", "surrogatepass")
    import yaml

    record = yaml.safe_load(GENUINE["record"])
    record[draw(st.sampled_from(RECORD_KEYS) | st.text(max_size=8))] = draw(VALUES)
    return yaml.safe_dump(record, allow_unicode=False).encode("utf-8", "surrogatepass")


@settings(max_examples=120, **SETTINGS)
@given(record=domain_records())
def test_any_domain_yaml_is_listed_ready_or_broken_and_hides_no_other_bundle(record, listed_home):
    import os

    from unictr_core.store.registry import Registry

    path = Path(os.path.realpath(listed_home / "domains" / "books" / "domain.yaml"))
    path.unlink()
    path.write_bytes(record)
    started = time.perf_counter()
    registry = Registry.open(listed_home)
    assert time.perf_counter() - started < BOUND_S
    event(registry.get("books").status if registry.get("books") else "gone")
    assert {registry.get(name).status for name in ("movies", "music")} == {"ready"}
    books = registry.get("books")
    assert books is not None and books.status in ("ready", "broken", "incompatible")
    if books.status == "broken":
        assert "\n" not in books.problem and "domains/books" in books.problem
    json.dumps(registry.to_dict(), allow_nan=False)  # what `domain list --json` and GET /v1/domains print


# ----------------------------------------------------------------------------- amazon2018 lines (issue 22)
@settings(max_examples=200, **SETTINGS)
@given(row=ROWS)
@example(row={"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": 10**70})
@example(row={"reviewerID": "u1", "asin": "a1", "overall": 5, "unixReviewTime": 1, "price": float("inf")})
def test_any_amazon_line_is_an_object_or_names_file_line_and_field(row, tmp_path):
    from unictr_core.adapters.amazon2018 import item_meta, parse_line

    started = time.perf_counter()
    try:
        obj = parse_line(json.dumps(row), tmp_path / "Books_5.json.gz", 7)
    except DataError as exc:
        assert exc.line == 7 and "Books_5.json.gz" in str(exc) and "\n" not in str(exc)
    else:
        meta = item_meta(obj)  # cleaning never fails on what parse_line let through
        assert meta.price is None or float(meta.price.split("-")[0]) < 1e12
    assert time.perf_counter() - started < BOUND_S
