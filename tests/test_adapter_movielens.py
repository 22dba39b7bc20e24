"""MovieLens 100K adapter, on slices of the real atomic files and on small broken copies."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unictr_core.adapters import snake_case
from unictr_core.adapters.movielens import age_band, prepare_movielens, read_atomic
from unictr_core.data.dataset import load_dataset
from unictr_core.data.schema import DataError

try:  # installed package name, else the source folder
    from unictr_cli.prepare_cmd import prepare_app
except ImportError:  # pragma: no cover - before `pip install -e .`
    from cli.prepare_cmd import prepare_app

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAW = DATA / "ml-100k"
SLICE_ROWS = 4000
K = 4


def _table(name: str) -> list[list[str]]:
    lines = (RAW / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


@pytest.fixture(scope="module")
def raw():
    if not RAW.is_dir():
        pytest.fail(f"real data missing: {RAW}")
    ratings = [(u, i, float(r), int(float(t))) for u, i, r, t in _table("ml-100k.inter")[:SLICE_ROWS]]
    movies = {row[0]: row for row in _table("ml-100k.item")}
    users = {row[0]: row for row in _table("ml-100k.user")}
    return ratings, movies, users


@pytest.fixture(scope="module")
def by_genre(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "genre"
    report = prepare_movielens(RAW, out, history_k=K, max_rows=SLICE_ROWS, min_domain_rows=100)
    return report, load_dataset(out)


def _all(ds):
    return [*ds.train, *ds.valid, *ds.test]


def test_label_rule_and_fields(by_genre, raw):
    _, ds = by_genre
    ratings, movies, users = raw
    rating_of = {(u, i, t): r for u, i, r, t in ratings}
    samples = _all(ds)
    assert len(samples) == len(rating_of) == SLICE_ROWS  # no duplicates in MovieLens 100K
    for s in samples:
        assert s.label == int(rating_of[(s.user_id, s.item_id, s.timestamp)] > 3)
        movie, user = movies[s.item_id], users[s.user_id]
        assert s.title == movie[1]
        assert s.extra["year"] == movie[2] and s.extra["genres"] == ", ".join(movie[3].split())
        assert s.extra["age"] == user[1] and s.extra["occupation"] == user[3]
        assert s.extra["gender"] == {"M": "male", "F": "female"}[user[2]]
        assert "rating" not in s.extra
    assert 0.4 < sum(s.label for s in samples) / len(samples) < 0.7


def test_genre_domains_and_merging(by_genre, raw):
    report, ds = by_genre
    ratings, movies, _ = raw
    counts = Counter(snake_case(movies[i][3].split()[0]) for _, i, _, _ in ratings)
    merged = set(ds.meta["merged_into_other"])
    assert merged == {g for g, n in counts.items() if n < 100} and merged  # some genres are small in the slice
    for s in _all(ds):
        primary = snake_case(movies[s.item_id][3].split()[0])
        assert s.domain == ("other" if primary in merged else primary)
    assert any("merged into 'other'" in note for note in report.notes)
    assert ds.holdout_domains == (["horror"] if "horror" in ds.domains else [])


def test_histories_hold_only_strictly_earlier_positive_movies(by_genre, raw):
    _, ds = by_genre
    ratings, movies, _ = raw
    positives = defaultdict(list)
    for u, i, r, t in ratings:
        if r > 3:
            positives[u].append((t, movies[i][1]))
    non_empty = 0
    for s in _all(ds):
        earlier = [(t, title) for t, title in positives[s.user_id] if t < s.timestamp]
        assert set(s.history) <= {title for _, title in earlier}, (s.user_id, s.timestamp)
        assert len(s.history) == min(K, len(earlier))
        if earlier:  # the newest history entry is one of the latest earlier positives
            latest = max(t for t, _ in earlier)
            assert s.history[-1] in {title for t, title in earlier if t == latest}
        non_empty += bool(s.history)
    assert non_empty > 1000


def test_time_split_per_domain_never_leaks(by_genre):
    _, ds = by_genre
    for domain in ds.domains:
        parts = [[s.timestamp for s in part if s.domain == domain] for part in (ds.train, ds.valid, ds.test)]
        assert parts[0], domain
        for earlier, later in ((parts[0], parts[1]), (parts[1], parts[2]), (parts[0], parts[2])):
            if earlier and later:
                assert max(earlier) < min(later), domain


@pytest.mark.parametrize("domain_by", ["age", "occupation"])
def test_user_group_domains(tmp_path, raw, domain_by):
    _, _, users = raw
    out = tmp_path / domain_by
    prepare_movielens(RAW, out, domain_by=domain_by, max_rows=SLICE_ROWS, min_domain_rows=0)
    ds = load_dataset(out)
    for s in _all(ds):
        user = users[s.user_id]
        expected = age_band(int(user[1])) if domain_by == "age" else snake_case(user[3])
        assert s.domain == expected
    assert len(ds.domains) >= 5 and ds.meta["domain_by"] == domain_by
    assert ds.meta["merged_into_other"] == []


def test_age_bands():
    assert [age_band(a) for a in (7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73)] == [
        "age_under_18", "age_under_18", "age_18_24", "age_18_24", "age_25_34", "age_25_34", "age_35_44",
        "age_35_44", "age_45_49", "age_45_49", "age_50_55", "age_50_55", "age_56_plus", "age_56_plus"]
    assert all(re.fullmatch(r"[a-z0-9_]+", snake_case(g)) for g in ("Children's", "Sci-Fi", "Film-Noir"))
    assert snake_case("Children's") == "childrens" and snake_case("Sci-Fi") == "sci_fi"


def test_bad_domain_by_and_holdout(tmp_path):
    with pytest.raises(ValueError, match="domain_by must be one of genre, age, occupation"):
        prepare_movielens(RAW, tmp_path / "x", domain_by="zip", max_rows=100)
    with pytest.raises(ValueError, match="holdout domain"):
        prepare_movielens(RAW, tmp_path / "x", max_rows=500, holdout_domains=["nope"])


def _broken_copy(tmp_path: Path, name: str, line_no: int, replacement: str) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir(exist_ok=True)
    for file in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        lines = (RAW / file).read_text(encoding="utf-8").splitlines(keepends=True)
        if file == "ml-100k.inter":
            lines = lines[:300]
        if file == name:
            lines[line_no - 1] = replacement + "\n"
        (folder / file).write_text("".join(lines), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name, line_no, replacement, field, message", [
    ("ml-100k.inter", 7, "196\t242\t3", None, "expected 4 tab-separated cells"),
    ("ml-100k.inter", 9, "196\t242\tfive\t881250949", "rating", "expected a number"),
    ("ml-100k.inter", 9, "196\t242\t7\t881250949", "rating", "from 1 to 5"),
    ("ml-100k.inter", 12, "196\t99999\t3\t881250949", "item_id", "not in ml-100k.item"),
    ("ml-100k.user", 5, "4\tforty\tM\twriter\t10001", "age", "expected a number"),
    ("ml-100k.inter", 1, "user_id\titem_id:token\trating:float\ttimestamp:float", "user_id", "name:type"),
    ("ml-100k.item", 1, "item_id:token\tmovie_title:token_seq\trelease_year:token", "class", "required column"),
])
def test_garbled_files_name_file_line_and_field(tmp_path, name, line_no, replacement, field, message):
    folder = _broken_copy(tmp_path, name, line_no, replacement)
    with pytest.raises(DataError, match=message) as info:
        prepare_movielens(folder, tmp_path / "out")
    assert info.value.source == str(folder / name)
    assert info.value.line == line_no and info.value.field == field
    result = CliRunner().invoke(prepare_app, ["movielens", "--raw", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{name}, line {line_no}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_read_atomic_header_and_rows(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("a:token\tb:float\n1\t2\n\n3\t4\n", encoding="utf-8")
    assert read_atomic(path, ["a"]) == [(2, {"a": "1", "b": "2"}), (4, {"a": "3", "b": "4"})]
    assert read_atomic(path, ["a"], max_rows=1) == [(2, {"a": "1", "b": "2"})]
    with pytest.raises(FileNotFoundError, match="not found"):
        read_atomic(tmp_path / "missing.inter", ["a"])


def test_cli_domain_by_flag_and_table(tmp_path):
    out = tmp_path / "age"
    result = CliRunner().invoke(prepare_app, ["movielens", "--raw", str(RAW), "--out", str(out),
                                              "--domain-by", "age", "--read-rows", "3000",
                                              "--min-domain-rows", "0"])
    assert result.exit_code == 0, result.output
    ds = load_dataset(out)
    table = {line.split()[0]: line.split() for line in result.output.splitlines()[2:] if line.strip()}
    assert set(ds.domains) <= set(table)
    for domain in ds.domains:
        assert domain.startswith("age_")
        assert int(table[domain][1]) == sum(s.domain == domain for s in ds.train)
        rows = [s for s in _all(ds) if s.domain == domain]
        assert float(table[domain][4]) == pytest.approx(sum(s.label for s in rows) / len(rows), abs=6e-4)
    assert int(table["TOTAL"][1]) + int(table["TOTAL"][2]) + int(table["TOTAL"][3]) == 3000
    bad = CliRunner().invoke(prepare_app, ["movielens", "--raw", str(RAW), "--out", str(out), "--domain-by", "zip"])
    assert bad.exit_code == 2 and "--domain-by" in bad.output
    missing = CliRunner().invoke(prepare_app, ["movielens", "--raw", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 1 and "nope" in missing.output and "--raw" in missing.output
