"""Clean item text and the 2014 Amazon release, on small hand-written files (never copies of the real ones)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from unictr_core.adapters.amazon2018 import find_category_files, item_meta, prepare_amazon2018, read_metadata
from unictr_core.adapters.text import clean_text, first_sentence
from unictr_core.data.dataset import load_dataset
from unictr_core.data.schema import DataError


def _write_gz(path: Path, lines) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_clean_text():
    assert clean_text("Tom &amp; Jerry&#39;s  <b>Best</b>\n Of") == "Tom & Jerry's Best Of"
    assert clean_text("Rock &amp;amp; Roll") == "Rock & Roll"  # double-escaped
    assert clean_text('<span class="a-size-medium a-color-secondary"') is None  # a tag cut off, nothing else
    assert clean_text("</span></span>") is None and clean_text("  ") is None and clean_text(None) is None
    assert clean_text("&nbsp;&nbsp;") is None
    long = clean_text("word " * 100, limit=30)
    assert len(long) <= 30 and long.endswith("…") and "wor…" not in long  # cut at a word boundary
    assert first_sentence(["", "<p>A fine card. Works anywhere.</p>"]) == "A fine card."


def test_title_fallbacks_in_order():
    junk = '<span class="a-size-medium a-color-secondary"'
    meta = item_meta({"title": junk, "description": ["<div>Shiny &amp; new. Second sentence.</div>"],
                      "category": ["Beauty", "Skin Care"], "brand": "Acme"})
    assert (meta.title, meta.title_source) == ("Shiny & new.", "description")
    meta = item_meta({"title": "", "description": [], "category": ["Beauty", "Skin Care", "</span>"],
                      "brand": "Acme"})
    assert (meta.title, meta.title_source, meta.category_path) == ("Skin Care", "category", "Beauty > Skin Care")
    meta = item_meta({"title": junk, "brand": " Acme "})
    assert (meta.title, meta.title_source, meta.brand) == ("Acme", "brand", "Acme")
    meta = item_meta({"title": "The &quot;Best&quot; Mug", "price": "$5.00"})
    assert (meta.title, meta.title_source, meta.price) == ('The "Best" Mug', "title", "5.00")
    assert item_meta({"title": junk}).title is None


def _review(user, asin, t, rating, **extra):
    return {"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": rating, **extra}


def test_fallback_counts_are_recorded_in_dataset_yaml(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_gz(raw / "Gift_Cards_5.json.gz", [_review(f"u{i}", f"A{i % 4}", 100 + i, 5 if i % 3 else 2)
                                            for i in range(20)])
    _write_gz(raw / "meta_Gift_Cards.json.gz", [
        {"asin": "A0", "title": '<span class="a-size-medium a-color-secondary"', "description": ["Nice card."]},
        {"asin": "A1", "title": "Tom &amp; Jerry Card", "brand": "ACME"},
        {"asin": "A2", "title": "", "description": ["Birthday card for kids. Any store."]},
        {"asin": "A3", "title": "", "category": ["Gift Cards", "Restaurants"]},
    ])
    prepare_amazon2018(raw, tmp_path / "ds", holdout_domains=[])
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["categories"]["gift_cards"]["title_source"] == {"title": 5, "description": 10, "category": 5,
                                                                 "brand": 0, "none": 0}
    titles = {s.item_id: s.title for s in load_dataset(tmp_path / "ds").train}
    assert titles == {"A0": "Nice card.", "A1": "Tom & Jerry Card", "A2": "Birthday card for kids.",
                      "A3": "Restaurants"}


def _py_literal(obj: dict) -> str:
    return repr(obj)  # single-quoted Python literal, as the 2014 metadata lines are


def test_2014_release_files(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_gz(raw / "reviews_Musical_Instruments_5.json.gz",
              [_review(f"u{i}", f"M{i % 3}", 1000 + i, 5 if i % 2 else 1, reviewText="ok", helpful=[0, 0])
               for i in range(12)])
    _write_gz(raw / "meta_Musical_Instruments.json.gz", [
        _py_literal({"asin": "M0", "title": "Guitar &amp; Strap", "price": 12.5, "salesRank": {"Musical": 3},
                     "categories": [["Musical Instruments", "Guitars"], ["Deals"]], "related": {"also_bought": []}}),
        _py_literal({"asin": "M1", "categories": [["Musical Instruments", "Drums"]], "brand": "Tama"}),
        _py_literal({"asin": "M2", "title": "Tuner", "description": "A tuner. Clip-on."}),
    ])
    files = find_category_files(raw)
    assert list(files) == ["Musical_Instruments"]
    assert files["Musical_Instruments"][1].name == "meta_Musical_Instruments.json.gz"
    meta = read_metadata(files["Musical_Instruments"][1])
    assert meta["M0"].title == "Guitar & Strap" and meta["M0"].price == "12.50"
    assert meta["M0"].category_path == "Musical Instruments > Guitars"
    assert (meta["M1"].title, meta["M1"].title_source, meta["M1"].brand) == ("Drums", "category", "Tama")
    prepare_amazon2018(raw, tmp_path / "ds", holdout_domains=[])
    ds = load_dataset(tmp_path / "ds")
    assert ds.domains == ["musical_instruments"]  # named after the category, not "reviews_..."
    rows = [*ds.train, *ds.valid, *ds.test]
    assert {s.item_id: s.title for s in rows} == {"M0": "Guitar & Strap", "M1": "Drums", "M2": "Tuner"}
    assert all(s.extra.get("category_path", "").startswith("Musical Instruments") for s in rows
               if s.item_id != "M2")


def test_bad_literal_line_is_a_clean_error_and_never_evaluated(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_gz(raw / "reviews_Beauty_5.json.gz", [_review("u1", "B0", 1, 5)])
    _write_gz(raw / "meta_Beauty.json.gz", [_py_literal({"asin": "B0", "title": "ok"}),
                                            "{'asin': 'B1', 'title': __import__('os').getcwd()}"])
    with pytest.raises(DataError, match=r"meta_Beauty.json.gz, line 2: invalid JSON .*not a Python literal"):
        read_metadata(raw / "meta_Beauty.json.gz")
