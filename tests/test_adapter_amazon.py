"""Amazon 2018 adapter, on slices of the real files (first rows of each gzip) and on tiny hand-made files."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unictr_core.adapters import amazon2018
from unictr_core.adapters.amazon2018 import (domain_name, fit_price_bins, parse_price, prepare_amazon2018,
                                             read_reviews, style_text)
from unictr_core.data.dataset import load_dataset
from unictr_core.data.schema import DataError

try:  # installed package name, else the source folder
    from unictr_cli.prepare_cmd import prepare_app
except ImportError:  # pragma: no cover - before `pip install -e .`
    from cli.prepare_cmd import prepare_app

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAW = DATA / "amazon2018"
SLICE_ROWS = 900
K = 3


def _raw_rows(path: Path, n: int) -> list[dict]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(out) >= n:
                break
            out.append(json.loads(line))
    return out


def _write_gz(path: Path, rows) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row if isinstance(row, str) else json.dumps(row))
            handle.write("\n")


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    if not RAW.is_dir():
        pytest.fail(f"real data missing: {RAW}")
    out = tmp_path_factory.mktemp("amazon") / "ds"
    report = prepare_amazon2018(RAW, out, history_k=K, max_rows=SLICE_ROWS)
    raw = {}
    for path in sorted(RAW.glob("*_5.json.gz")):
        category = path.name[: -len("_5.json.gz")]
        raw[domain_name(category)] = _raw_rows(path, SLICE_ROWS)
    return report, load_dataset(out), raw


def _all(ds):
    return [*ds.train, *ds.valid, *ds.test]


def test_domains_are_snake_case_and_fashion_is_mapped(sliced):
    report, ds, _ = sliced
    assert ds.domains == ["all_beauty", "fashion", "gift_cards"]
    assert domain_name("AMAZON_FASHION") == "fashion"
    assert ds.holdout_domains == ["all_beauty"]
    assert sorted(d.domain for d in report.domains) == ds.domains


def test_duplicates_are_gone_and_counted(sliced):
    report, ds, raw = sliced
    keys = [(s.domain, s.user_id, s.item_id, s.timestamp) for s in _all(ds)]
    assert len(keys) == len(set(keys))
    counted = {d.domain: d.duplicates_dropped for d in report.domains}
    for domain, rows in raw.items():
        unique = {(r["reviewerID"], r["asin"], r["unixReviewTime"]) for r in rows}
        assert counted[domain] == len(rows) - len(unique)
        assert sum(s.domain == domain for s in _all(ds)) == len(unique)
    assert ds.meta["duplicates_dropped"] == counted
    # the slice of the real Beauty file does contain duplicates, so this is not vacuous
    assert counted["all_beauty"] > 0


def test_label_rule_matches_the_raw_rating(sliced):
    _, ds, raw = sliced
    first_rating = {}
    for domain, rows in raw.items():
        for r in rows:
            first_rating.setdefault((domain, r["reviewerID"], r["asin"], r["unixReviewTime"]), r["overall"])
    samples = _all(ds)
    assert {s.label for s in samples} == {0, 1}
    for s in samples:
        assert s.label == int(first_rating[(s.domain, s.user_id, s.item_id, s.timestamp)] > 3)
        assert "rating" not in s.extra and "overall" not in s.extra


def test_histories_hold_only_strictly_earlier_positive_items(sliced):
    _, ds, raw = sliced
    samples = _all(ds)
    text_of = {(s.domain, s.user_id, s.item_id, s.timestamp): amazon2018.history_text(s) for s in samples}
    positives = defaultdict(list)  # user -> [(time, text)] from the raw rows
    for domain, rows in raw.items():
        for r in rows:
            if r["overall"] > 3:
                key = (domain, r["reviewerID"], r["asin"], r["unixReviewTime"])
                positives[r["reviewerID"]].append((r["unixReviewTime"], text_of[key]))
    non_empty = 0
    for s in samples:
        earlier = {text for t, text in positives[s.user_id] if t < s.timestamp}
        earlier_events = {(t, text) for t, text in positives[s.user_id] if t < s.timestamp}
        assert set(s.history) <= earlier, (s.user_id, s.timestamp, s.history)
        assert len(s.history) == min(K, len(earlier_events))
        non_empty += bool(s.history)
    assert non_empty > 50  # the check above is exercised on real histories


def test_time_split_never_leaks(sliced):
    _, ds, _ = sliced
    for domain in ds.domains:
        train = [s.timestamp for s in ds.train if s.domain == domain]
        valid = [s.timestamp for s in ds.valid if s.domain == domain]
        test = [s.timestamp for s in ds.test if s.domain == domain]
        assert train and valid and test
        assert max(train) < min(valid) and max(valid) < min(test)
        n = len(train) + len(valid) + len(test)
        assert abs(len(train) / n - 0.8) < 0.1


def test_item_text_from_metadata_or_style(sliced):
    _, ds, _ = sliced
    assert ds.meta["domains_without_metadata"] == ["all_beauty", "fashion"]
    gift = [s for s in _all(ds) if s.domain == "gift_cards"]
    assert all("text_source" not in s.extra and "category" not in s.extra for s in _all(ds))
    assert any(s.brand == "Amazon" and "Gift Card" in (s.title or "") for s in gift)
    assert any(s.price and s.price.replace(".", "").isdigit() for s in gift)
    assert any(s.extra.get("category_path", "").startswith("Gift Cards") for s in gift)
    sources = ds.meta["categories"]["gift_cards"]["title_source"]
    assert sum(sources.values()) == len(gift) and sources["title"] > 0
    fashion = [s for s in _all(ds) if s.domain == "fashion"]
    assert all(s.title is None and s.brand is None for s in fashion)  # no metadata: no title
    assert any("Size: " in s.extra.get("style", "") for s in fashion)


def test_price_bins_fitted_on_train_rows_only(sliced, tmp_path, monkeypatch):
    _, ds, _ = sliced
    edges = ds.meta["fitted_on_train"]["price_bins"]["edges"]
    assert edges == fit_price_bins(ds.train)
    assert edges and set(edges) == {"gift_cards"}
    # spy on the fit: it must receive exactly the train rows, never a valid or test row
    seen = []
    monkeypatch.setattr(amazon2018, "fit_price_bins", lambda rows: seen.extend(rows) or fit_price_bins(rows))
    prepare_amazon2018(RAW, tmp_path / "again", history_k=K, max_rows=SLICE_ROWS)
    again = load_dataset(tmp_path / "again")
    key = lambda s: (s.domain, s.user_id, s.item_id, s.timestamp)  # noqa: E731
    assert sorted(map(key, seen)) == sorted(map(key, again.train))
    assert not set(map(key, seen)) & set(map(key, again.valid + again.test))


def test_helpers():
    assert parse_price("$25.00") == "25.00"
    assert parse_price("$1,250.00") == "1250.00"
    assert parse_price("$10.00 - $20.00") == "10.00-20.00"
    assert parse_price("") is None and parse_price("<div class='x'>") is None
    assert style_text({"Size:": " Large", "Color:": " Black"}) == "Size: Large, Color: Black"
    assert style_text(None) == ""


# ----------------------------------------------------------------------------- hand-made raw files

def _review(user, asin, t, rating, style=None):
    row = {"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": rating}
    if style:
        row["style"] = style
    return row


def _meta(asin, title, price):
    return {"asin": asin, "title": title, "brand": "B", "price": price}


def test_exact_histories_across_categories_and_train_only_bins(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # gift cards: 16 early rows priced 10..40 (the train half), then 16 rows of a $999 card (valid + test)
    gifts = [_review(f"g{i}", f"G{i % 4}", 100 + i, 5) for i in range(13)]
    gifts += [_review(f"late{i}", "GX", 1000 + i, 5) for i in range(16)]
    gifts += [_review("u1", "G0", 5, 5), _review("u1", "G1", 20, 2), _review("u1", "G2", 30, 4)]
    _write_gz(raw / "Gift_Cards_5.json.gz", gifts)
    _write_gz(raw / "meta_Gift_Cards.json.gz",
              [_meta(f"G{i}", f"Card {i}", f"${10 * (i + 1)}.00") for i in range(4)] + [_meta("GX", "Big", "$999.00")])
    _write_gz(raw / "AMAZON_FASHION_5.json.gz",
              [_review("u1", "F1", 10, 5, {"Size:": " L"}), _review("u1", "F2", 30, 5),
               _review("u1", "F3", 40, 3), _review("u1", "F3", 40, 3), _review("u1", "F4", 50, 5)]
              + [_review(f"f{i}", "F9", 200 + i, 4) for i in range(10)])
    out = tmp_path / "ds"
    report = prepare_amazon2018(raw, out, history_k=2, fractions=(0.5, 0.25, 0.25))
    ds = load_dataset(out)
    u1 = {s.item_id: s for s in [*ds.train, *ds.valid, *ds.test] if s.user_id == "u1"}
    assert u1["G0"].history == []
    assert u1["F1"].history == ["Card 0"]
    assert u1["G1"].history == ["Card 0", "F1"]  # no fashion metadata: the asin stands for the item
    assert u1["G2"].history == ["Card 0", "F1"]  # G1 was negative; F2 has the same time
    # oldest first; the same-time F2 (t=30) and G2 (t=30) are ordered by domain name
    assert u1["F3"].history == ["F2", "Card 2"]
    assert u1["F4"].history == ["F2", "Card 2"]  # F3 (rating 3) is not positive
    assert {d.domain: d.duplicates_dropped for d in report.domains} == {"fashion": 1, "gift_cards": 0}
    assert {s.item_id for s in ds.train if s.domain == "gift_cards"} == {"G0", "G1", "G2", "G3"}
    edges = ds.meta["fitted_on_train"]["price_bins"]["edges"]["gift_cards"]
    assert edges and max(edges) < 999  # fitted on all rows, half of them at 999 would move the edges
    big = [s for s in ds.test if s.item_id == "GX"]
    assert big and all(s.extra["price_bin"] == f"q{len(edges)}" for s in big)
    assert all("price_bin" not in s.extra for s in ds.test if s.domain == "fashion")  # no price, no bin


def test_categories_filter_and_unknown_category(tmp_path):
    ds_dir = tmp_path / "gift"
    prepare_amazon2018(RAW, ds_dir, categories=["gift_cards"], max_rows=200)
    assert load_dataset(ds_dir).domains == ["gift_cards"]
    with pytest.raises(ValueError, match="unknown category 'books'.*Gift_Cards"):
        prepare_amazon2018(RAW, tmp_path / "x", categories=["books"], max_rows=10)


@pytest.mark.parametrize("bad_line, field, message", [
    ('{"reviewerID": "u", "asin": "a", "unixReviewTime": 5}', "overall", "rating between 1 and 5"),
    ('{"reviewerID": "u", "asin": "a", "unixReviewTime": 5, "overall": 9}', "overall", "rating between 1 and 5"),
    ('{"reviewerID": "u", "overall": 5, "unixReviewTime": 5}', "asin", "missing"),
    ('{"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": "May"}', "unixReviewTime", "unix time"),
    ('{"reviewerID": "u", "asin": "a", "overall": 5,', None, "invalid JSON"),
])
def test_bad_review_lines_name_file_line_and_field(tmp_path, bad_line, field, message):
    path = tmp_path / "Gift_Cards_5.json.gz"
    _write_gz(path, [_review("u", "a", 1, 5), "", bad_line])
    with pytest.raises(DataError, match=message) as info:
        read_reviews(path, "Gift_Cards")
    assert info.value.source == str(path) and info.value.line == 3 and info.value.field == field


def test_truncated_gzip_is_a_clean_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = gzip.compress(b"".join(json.dumps(_review("u", f"a{i}", i, 5)).encode() + b"\n" for i in range(500)))
    (raw / "Gift_Cards_5.json.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot read as gzip") as info:
        prepare_amazon2018(raw, tmp_path / "out")
    assert "Gift_Cards_5.json.gz" in str(info.value)
    result = CliRunner().invoke(prepare_app, ["amazon2018", "--raw", str(raw), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Gift_Cards_5.json.gz" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_prints_summary_table(tmp_path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(prepare_app, ["amazon2018", "--raw", str(RAW), "--out", str(out),
                                              "--categories", "gift_cards,fashion", "--read-rows", "300",
                                              "--history-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["domain", "train", "valid", "test", "pos_rate", "dups_dropped", "holdout"]
    fashion = next(line.split() for line in lines if line.startswith("fashion"))
    ds = load_dataset(out)
    assert int(fashion[1]) == sum(s.domain == "fashion" for s in ds.train)
    assert int(fashion[3]) == sum(s.domain == "fashion" for s in ds.test)
    assert "no metadata for fashion" in result.output
    assert ds.meta["history_k"] == 2 and ds.holdout_domains == []
