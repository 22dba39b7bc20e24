"""Histories never see the present or the future; splits never leak; dataset folders round-trip atomically."""

from __future__ import annotations

import random

import pytest
import yaml

from unictr_core.data import dataset as dataset_module
from unictr_core.data.dataset import load_dataset, split_by_time, split_random, subsample_per_domain, write_dataset
from unictr_core.data.history import attach_histories
from unictr_core.data.schema import DataError, Sample


def _random_events(n=400, seed=1) -> list[Sample]:
    rng = random.Random(seed)
    return [Sample(rng.choice(["books", "movies", "music"]), f"u{rng.randrange(12)}", f"i{i}",
                   label=rng.randrange(2), timestamp=rng.randrange(60), title=f"title {i}")
            for i in range(n)]


# ----------------------------------------------------------------------------- histories

def test_history_small_example():
    events = [
        Sample("books", "u1", "b1", 1, 10, "A"),
        Sample("movies", "u1", "m1", 1, 20, "B"),
        Sample("books", "u1", "b2", 0, 20, "C"),   # same time as B: must not see B
        Sample("music", "u1", "s1", 1, 30, "D"),
        Sample("books", "u2", "b1", 1, 5, "A"),    # other user
        Sample("books", "u1", "b3", 1, 40, "E"),
    ]
    attach_histories(events, k=2)
    assert [e.history for e in events] == [[], ["A"], ["A"], ["A", "B"], [], ["B", "D"]]


def test_history_never_contains_same_time_or_later_items():
    events = _random_events()
    attach_histories(events, k=5, text_of=lambda s: s.item_id)
    when = {e.item_id: e for e in events}
    checked = 0
    for e in events:
        assert len(e.history) <= 5
        for item in e.history:
            source = when[item]
            assert source.user_id == e.user_id and source.label == 1
            assert source.timestamp < e.timestamp
            checked += 1
        earlier = sorted((x for x in events if x.user_id == e.user_id and x.label == 1
                          and x.timestamp < e.timestamp), key=lambda x: (x.timestamp, events.index(x)))
        assert e.history == [x.item_id for x in earlier[-5:]]
    assert checked > 500


def test_history_is_deterministic_and_needs_timestamps():
    first, second = _random_events(seed=3), _random_events(seed=3)
    attach_histories(first)
    attach_histories(second)
    assert [e.history for e in first] == [e.history for e in second]
    with pytest.raises(DataError) as info:
        attach_histories([Sample("books", "u1", "b1", 1, 1), Sample("books", "u1", "b2", 1)])
    assert info.value.line == 2 and info.value.field == "timestamp"
    with pytest.raises(ValueError):
        attach_histories([], k=-1)


# ----------------------------------------------------------------------------- splits

def test_time_split_never_leaks_and_ties_do_not_straddle():
    events = _random_events(n=900)
    train, valid, test = split_by_time(events)
    assert len(train) + len(valid) + len(test) == len(events)
    assert sorted(e.item_id for e in train + valid + test) == sorted(e.item_id for e in events)
    for domain in ("books", "movies", "music"):
        stamps = [[e.timestamp for e in part if e.domain == domain] for part in (train, valid, test)]
        assert max(stamps[0]) < min(stamps[1]) and max(stamps[1]) < min(stamps[2])
        n = sum(map(len, stamps))
        assert 0.7 * n <= len(stamps[0]) <= 0.8 * n + 1  # ties only ever move rows to the later part


def test_time_split_all_same_timestamp_goes_to_train_side_never_straddles():
    events = [Sample("books", "u", f"i{i}", 1, 7) for i in range(10)]
    train, valid, test = split_by_time(events)
    assert [len(train), len(valid), len(test)] in ([0, 0, 10],)
    with pytest.raises(ValueError):
        split_by_time(events, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(DataError):
        split_by_time([Sample("books", "u", "i")])


def test_random_split_is_seeded_per_domain():
    events = _random_events(n=600)
    a = split_random(events, (0.8, 0.1, 0.1), seed=5)
    b = split_random(events, (0.8, 0.1, 0.1), seed=5)
    c = split_random(events, (0.8, 0.1, 0.1), seed=6)
    ids = lambda parts: [[e.item_id for e in part] for part in parts]
    assert ids(a) == ids(b) and ids(a) != ids(c)
    for domain in ("books", "movies", "music"):
        n = sum(e.domain == domain for e in events)
        assert abs(sum(e.domain == domain for e in a[0]) - 0.8 * n) <= 1


# ----------------------------------------------------------------------------- dataset folders

def _splits():
    events = _random_events(n=120)
    attach_histories(events)
    return split_by_time(events)


def test_write_and_load_dataset(tmp_path):
    train, valid, test = _splits()
    target = tmp_path / "ds"
    write_dataset(target, train, valid, test, {"name": "tiny", "holdout_domains": ["music"],
                                               "provenance": "random test events", "seed": 3})
    meta = yaml.safe_load((target / "dataset.yaml").read_text())
    assert meta["name"] == "tiny" and meta["holdout_domains"] == ["music"] and meta["seed"] == 3
    books_train = [e for e in train if e.domain == "books"]
    assert meta["domains"]["books"]["train"]["rows"] == len(books_train)
    expected_rate = round(sum(e.label for e in books_train) / len(books_train), 4)
    assert meta["domains"]["books"]["train"]["positive_rate"] == expected_rate
    loaded = load_dataset(target)
    assert (loaded.train, loaded.valid, loaded.test) == (train, valid, test)
    assert loaded.holdout_domains == ["music"] and loaded.joint_domains == ["books", "movies"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_crash_while_writing_keeps_previous_folder(tmp_path, monkeypatch):
    train, valid, test = _splits()
    target = tmp_path / "ds"
    write_dataset(target, train, valid, test, {"name": "first"})
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dataset_module.yaml, "safe_dump", broken_dump)
    with pytest.raises(OSError):
        write_dataset(target, train[:5], valid, test, {"name": "second"})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_write_dataset_refuses_foreign_folder_and_unlabelled_rows(tmp_path):
    train, valid, test = _splits()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_dataset(foreign, train, valid, test, {})
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError) as info:
        write_dataset(tmp_path / "x", train + [Sample("books", "u", "i")], valid, test, {})
    assert info.value.field == "label"


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match="dataset.yaml"):
        load_dataset(tmp_path / "ds")
    train, valid, test = _splits()
    write_dataset(tmp_path / "ds", train, valid, test, {})
    with open(tmp_path / "ds" / "valid.jsonl", "a") as handle:
        handle.write('{"domain": "books", "user_id": "u1", "item_id": "z"}\n')
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "ds")
    assert info.value.field == "label" and info.value.line == len(valid) + 1 and "valid.jsonl" in str(info.value)


def test_subsample_per_domain_keeps_order_and_caps_each_domain():
    samples = [Sample("a" if i % 3 else "b", f"u{i}", "i", 0, i) for i in range(30)]
    kept = subsample_per_domain(samples, 4, seed=1)
    assert sum(s.domain == "a" for s in kept) == 4 and sum(s.domain == "b" for s in kept) == 4
    assert [s.timestamp for s in kept] == sorted(s.timestamp for s in kept)
    assert subsample_per_domain(samples, 4, seed=1) == kept
    everything = subsample_per_domain(samples, None, seed=1)
    assert everything == samples and everything is not samples  # a new list: the caller's is never changed
    # one generator draws the domains in the order of their first row ("b" is row 0), as `unictr train` always did
    rng = random.Random(1)
    rows_b, rows_a = [i for i in range(30) if i % 3 == 0], [i for i in range(30) if i % 3]
    drawn = set(rng.sample(rows_b, 4)) | set(rng.sample(rows_a, 4))
    assert [s.timestamp for s in kept] == sorted(drawn)
