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
from unictr_core.batching import EncodedSamples
from unictr_core.data_io import read_samples
from unictr_core.predict import predict_samples
from unictr_core.registry import load_model
from unictr_core.schema import CORE_FIELDS, DataError, Sample

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
