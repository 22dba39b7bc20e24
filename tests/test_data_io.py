"""Reading / writing samples: validation errors name file, line and field; round-trips keep everything."""

from __future__ import annotations

import json
import os

import pytest

from unictr_core.data.data_io import DOMAIN_PATTERN, iter_samples, read_samples, write_samples
from unictr_core.data.schema import DataError, Sample


def _jsonl(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"domain": "books", "user_id": "u1", "item_id": "b1", "label": 1, "timestamp": 10}'


def _error(path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        read_samples(path, **kwargs)
    return info.value


@pytest.mark.parametrize("bad_line, field, fragment", [
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "label": "yes"}', "label",
     "expected 0 or 1 (or true/false), got 'yes'"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "label": 2}', "label", "got 2"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "label": 0.5}', "label", "got 0.5"),
    ('{"domain": "books", "item_id": "b1"}', "user_id", "missing"),
    ('{"user_id": "u1", "item_id": "b1"}', "domain", "missing"),
    ('{"domain": "books", "user_id": "u1"}', "item_id", "missing"),
    ('{"domain": "books", "user_id": "  ", "item_id": "b1"}', "user_id", "empty"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "timestamp": "noon"}', "timestamp", "integer"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "timestamp": 1.5}', "timestamp", "integer"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "history": "a, b"}', "history", "list of strings"),
    ('{"domain": "books", "user_id": "u1", "item_id": "b1", "history": ["a", 3]}', "history", "entry 1"),
    ('{"domain": "Books!", "user_id": "u1", "item_id": "b1"}', "domain", DOMAIN_PATTERN),
    ('{"domain": "books", "user_id": ["u1"], "item_id": "b1"}', "user_id", "identifier"),
])
def test_bad_jsonl_rows_name_file_line_and_field(tmp_path, bad_line, field, fragment):
    path = _jsonl(tmp_path, [GOOD, "", GOOD, bad_line])
    err = _error(path)
    assert err.line == 4  # the blank line still counts
    assert err.field == field
    assert fragment in str(err)
    assert str(err).startswith(f"{path}, line 4, field '{field}': ")


def test_malformed_json_and_non_object_lines(tmp_path):
    err = _error(_jsonl(tmp_path, [GOOD, '{"domain": "books",']))
    assert err.line == 2 and "malformed JSON" in str(err)
    err = _error(_jsonl(tmp_path, [GOOD, GOOD, "[1, 2]"], name="b.jsonl"))
    assert err.line == 3 and "JSON object" in str(err)


def test_missing_file_and_unsupported_extension(tmp_path):
    err = _error(tmp_path / "nope.jsonl")
    assert "file not found" in str(err) and "nope.jsonl" in str(err)
    other = tmp_path / "data.parquet"
    other.write_text("x")
    assert "unsupported file extension '.parquet'" in str(_error(other))


def test_require_labels_names_the_line(tmp_path):
    path = _jsonl(tmp_path, [GOOD, '{"domain": "books", "user_id": "u1", "item_id": "b2"}'])
    assert read_samples(path)[1].label is None
    err = _error(path, require_labels=True)
    assert (err.line, err.field) == (2, "label") and "required" in str(err)


@pytest.mark.parametrize("raw, expected", [(0, 0), (1, 1), (True, 1), (False, 0), ("1", 1), ("0", 0),
                                           (1.0, 1), (0.0, 0), ("true", 1), ("False", 0)])
def test_accepted_label_spellings(tmp_path, raw, expected):
    line = json.dumps({"domain": "books", "user_id": "u1", "item_id": "b1", "label": raw})
    assert read_samples(_jsonl(tmp_path, [line]))[0].label == expected


def test_unknown_keys_go_to_extra_as_strings(tmp_path):
    line = json.dumps({"domain": "books", "user_id": 7, "item_id": "b1", "genre": "sci-fi", "pages": 320,
                       "tags": ["a", "b"], "extra": {"lang": "en"}})
    sample = read_samples(_jsonl(tmp_path, [line]))[0]
    assert sample.user_id == "7"
    assert sample.extra == {"genre": "sci-fi", "pages": "320", "tags": '["a", "b"]', "lang": "en"}


def test_iter_samples_is_lazy(tmp_path):
    path = _jsonl(tmp_path, [GOOD, "not json"])
    samples = iter_samples(path)
    assert next(samples).item_id == "b1"
    with pytest.raises(DataError):
        next(samples)


CSV_TEXT = (
    "domain,user_id,item_id,label,timestamp,title,brand,price,history,genre\n"
    'books,u1,b1,1,10,"Edge of the Nebula, a novel",Orbit,9.99,"[""Dune"", ""Solaris""]",sci-fi\n'
    "movies,u1,m1,0,11,Starship Down,,,Dune || Solaris || Alien,\n"
    "\n"
    "music,u2,s1,,,,,,,\n"
)


def test_csv_reading(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    first, second, third = read_samples(path)
    assert first == Sample("books", "u1", "b1", 1, 10, "Edge of the Nebula, a novel", "Orbit", "9.99",
                           ["Dune", "Solaris"], {"genre": "sci-fi"})
    assert second.history == ["Dune", "Solaris", "Alien"] and second.brand is None and second.extra == {}
    assert third == Sample("music", "u2", "s1")


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(CSV_TEXT + "books,u3,b9,maybe,,,,,,\n", encoding="utf-8")
    err = _error(path)
    assert (err.line, err.field) == (6, "label")
    path.write_text("domain,item_id\nbooks,b1\n", encoding="utf-8")
    err = _error(path)
    assert (err.line, err.field) == (1, "user_id") and "header" in str(err)
    path.write_text("domain,user_id,item_id\nbooks,u1\n", encoding="utf-8")
    err = _error(path)
    assert err.line == 2 and "expected 3 columns" in str(err)
    path.write_text("domain,user_id,item_id\nbooks,,b1\n", encoding="utf-8")
    err = _error(path)
    assert (err.line, err.field) == (2, "user_id") and "empty" in str(err)


def _examples() -> list[Sample]:
    return [
        Sample("books", "u1", "b1", 1, 10, "Edge of the Nebula, \"a\" novel", "Orbit", "9.99",
               ["Dune", "Ünïcode ✓"], {"genre": "sci-fi", "note": "line\nbreak"}),
        Sample("movies", "u2", "m1", 0, 11, "Starship Down", None, None, [], {}),
        Sample("music", "u3", "s1"),
    ]


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv"])
def test_round_trip(tmp_path, name):
    path = tmp_path / "sub" / name
    write_samples(path, _examples())
    assert read_samples(path) == _examples()
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp files left


def test_jsonl_lines_are_sample_dicts(tmp_path):
    path = tmp_path / "out.jsonl"
    write_samples(path, _examples())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [s.to_dict() for s in _examples()]


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_samples(path, _examples())
    before = path.read_bytes()

    class Boom(Sample):
        def to_dict(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_samples(path, [_examples()[0], Boom("books", "u", "i")])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.jsonl"]
