"""MovieLens 100K (RecBole atomic files) -> a UniCTR dataset folder.

Input (``raw_dir``): ``ml-100k.inter`` (user_id, item_id, rating, timestamp),
``ml-100k.item`` (item_id, movie_title, release_year, class) and
``ml-100k.user`` (user_id, age, gender, occupation, zip_code). Each is
tab-separated with a typed header line such as ``user_id:token``.

:func:`prepare_movielens` builds one sample per rating:

* domain: the movie's primary genre (the first one listed in ``class``;
  in this file genres are listed alphabetically) by default, or the user's age
  band (``age_under_18``, ``age_18_24``, ... ``age_56_plus``) or occupation;
  domains with fewer than ``min_domain_rows`` rows are merged into ``other``
  (the decision uses row counts only, never labels);
* title = movie title; ``extra``: year, genres, genre (primary), age, age_band
  (``"25-34"``), gender, occupation -- all strings;
* ``dataset.yaml`` carries :data:`TEMPLATE`, a prompt template that renders
  every one of these fields (the same fields the ID baselines get);
* label = ``rating > 3``;
* history = titles of the user's last ``history_k`` positively rated movies
  strictly earlier in time, oldest first;
* split by time per domain (80/10/10 by default).

Nothing is fitted on the data, so there is nothing that could see test rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from unictr_core.adapters.common import PrepareReport, build_report, drop_duplicates, snake_case
from unictr_core.data.data_io import TIMESTAMP_RANGE
from unictr_core.data.schema import DataError, Sample

PathLike = Union[str, Path]

DOMAIN_CHOICES = ("genre", "age", "occupation")
OTHER_DOMAIN = "other"
DEFAULT_MIN_DOMAIN_ROWS = 500
#: default zero-shot domain per grouping (used when present after merging)
DEFAULT_HOLDOUT = {"genre": "horror", "age": "age_56_plus", "occupation": "healthcare"}
#: upper age of each band (inclusive) and its domain name; the MovieLens 1M bands
AGE_BANDS = ((17, "age_under_18"), (24, "age_18_24"), (34, "age_25_34"), (44, "age_35_44"),
             (49, "age_45_49"), (55, "age_50_55"), (None, "age_56_plus"))
GENDERS = {"M": "male", "F": "female"}
#: the dataset's prompt template: every field the baselines see, in words
TEMPLATE = {
    "parts": [
        "{domain_name}:",
        " The user ID is {user_id}",
        ", a {age}-year-old {gender} {occupation}",
        " (age band {age_band})",
        ", who clicked {history} recently.",
        " The ID of the current movie is {item_id}",
        ", the title is '{title}'",
        ", released in {year}",
        ", genres: {genres}",
        ".",
    ],
    "history_item": "'{text}'",
    "history_separator": ", ",
}

FILES = {
    "inter": ("ml-100k.inter", ("user_id", "item_id", "rating", "timestamp")),
    "item": ("ml-100k.item", ("item_id", "movie_title", "release_year", "class")),
    "user": ("ml-100k.user", ("user_id", "age", "gender", "occupation")),
}

PROVENANCE = (
    "MovieLens 100K, F. Maxwell Harper and Joseph A. Konstan, ACM TiiS 2015; GroupLens Research, "
    "research use. Atomic-file form from recbole==1.2.1 (dataset_example/ml-100k). Label = rating > 3."
)


@dataclass(frozen=True)
class Movie:
    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class User:
    user_id: str
    age: int
    gender: str
    occupation: str


@dataclass(frozen=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    timestamp: int
    line: int


# ----------------------------------------------------------------------------
# atomic-file reader
# ----------------------------------------------------------------------------

def read_atomic(path: PathLike, required: Sequence[str], max_rows: Optional[int] = None) -> list[tuple[int, dict]]:
    """Rows of a RecBole atomic file as ``(line number, {column: text})``.

    The header line holds ``name:type`` cells; ``required`` columns must be
    present. Every row must have exactly as many tab-separated cells as the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file not found: {path}")
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            header_line = handle.readline()
            if not header_line.strip():
                raise DataError(str(path), 1, None, "empty file: expected a header line like 'user_id:token'")
            columns = []
            for cell in header_line.rstrip("\r\n").split("\t"):
                name, sep, kind = cell.partition(":")
                if not sep or not name or not kind:
                    raise DataError(str(path), 1, cell or None,
                                    f"expected header cells like 'name:type', got {cell!r}")
                columns.append(name)
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(str(path), 1, missing[0],
                                f"required column missing from header (columns: {', '.join(columns)})")
            for line_no, line in enumerate(handle, start=2):
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                if max_rows is not None and len(rows) >= max_rows:
                    break
                cells = text.split("\t")
                if len(cells) != len(columns):
                    raise DataError(str(path), line_no, None,
                                    f"expected {len(columns)} tab-separated cells ({', '.join(columns)}), "
                                    f"got {len(cells)}")
                rows.append((line_no, dict(zip(columns, cells))))
    except UnicodeDecodeError as exc:
        raise DataError(str(path), None, None, f"not UTF-8 text ({exc})") from None
    return rows


def _int_cell(path: Path, line: int, row: dict, field: str) -> int:
    text = row[field].strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(str(path), line, field, f"expected a number, got {text!r}") from None
    if not value.is_integer() or not 0 <= value < TIMESTAMP_RANGE:  # 64 bits: what the row reader reads back
        shown = repr(text) if len(text) <= 40 else f"a number of {len(text):,} characters"
        raise DataError(str(path), line, field, f"expected a non-negative whole number of at most 64 bits, got "
                        f"{shown}")
    return int(value)


def _token(path: Path, line: int, row: dict, field: str) -> str:
    text = row[field].strip()
    if not text:
        raise DataError(str(path), line, field, "required value is empty")
    return text


def read_movies(path: PathLike) -> dict[str, Movie]:
    path = Path(path)
    out = {}
    for line, row in read_atomic(path, FILES["item"][1]):
        item_id = _token(path, line, row, "item_id")
        if item_id in out:
            raise DataError(str(path), line, "item_id", f"duplicate movie id {item_id!r}")
        genres = tuple(row["class"].split())
        out[item_id] = Movie(item_id, row["movie_title"].strip() or item_id, row["release_year"].strip(),
                             genres or ("unknown",))
    return out


def read_users(path: PathLike) -> dict[str, User]:
    path = Path(path)
    out = {}
    for line, row in read_atomic(path, FILES["user"][1]):
        user_id = _token(path, line, row, "user_id")
        if user_id in out:
            raise DataError(str(path), line, "user_id", f"duplicate user id {user_id!r}")
        out[user_id] = User(user_id, _int_cell(path, line, row, "age"), _token(path, line, row, "gender"),
                            _token(path, line, row, "occupation"))
    return out


def read_ratings(path: PathLike, max_rows: Optional[int] = None) -> list[Rating]:
    path = Path(path)
    out = []
    for line, row in read_atomic(path, FILES["inter"][1], max_rows):
        text = row["rating"].strip()
        try:
            rating = float(text)
        except ValueError:
            raise DataError(str(path), line, "rating", f"expected a number from 1 to 5, got {text!r}") from None
        if not 1 <= rating <= 5:
            raise DataError(str(path), line, "rating", f"expected a number from 1 to 5, got {text!r}")
        out.append(Rating(_token(path, line, row, "user_id"), _token(path, line, row, "item_id"), rating,
                          _int_cell(path, line, row, "timestamp"), line))
    return out


# ----------------------------------------------------------------------------
# domains
# ----------------------------------------------------------------------------

def age_band(age: int) -> str:
    for upper, name in AGE_BANDS:
        if upper is None or age <= upper:
            return name
    raise AssertionError("unreachable")


def age_band_text(age: int) -> str:
    """The age band in words: ``"under 18"``, ``"25-34"``, ``"56+"``."""
    name = age_band(age)[len("age_"):]
    return {"under_18": "under 18", "56_plus": "56+"}.get(name, name.replace("_", "-"))


def raw_domain(domain_by: str, movie: Movie, user: User) -> str:
    """The domain of one rating before small domains are merged."""
    if domain_by == "genre":
        return snake_case(movie.genres[0])
    if domain_by == "age":
        return age_band(user.age)
    if domain_by == "occupation":
        return snake_case(user.occupation)
    raise ValueError(f"domain_by must be one of {', '.join(DOMAIN_CHOICES)}, got {domain_by!r}")


def merge_small_domains(counts: Counter, min_rows: int) -> dict[str, str]:
    """Map raw domain -> final domain: those with fewer than ``min_rows`` rows become ``other``."""
    return {d: (d if n >= min_rows else OTHER_DOMAIN) for d, n in counts.items()}


# ----------------------------------------------------------------------------
# pipeline
# ----------------------------------------------------------------------------

def load_movielens(raw_dir: PathLike, domain_by: str = "genre", history_k: int = 5,
                   max_rows: Optional[int] = None, min_domain_rows: int = DEFAULT_MIN_DOMAIN_ROWS
                   ) -> tuple[list[Sample], dict[str, int], dict[str, str]]:
    """Samples with histories; returns ``(samples, duplicates per domain, raw -> final domain map)``."""
    from unictr_core.data.history import attach_histories

    if domain_by not in DOMAIN_CHOICES:
        raise ValueError(f"domain_by must be one of {', '.join(DOMAIN_CHOICES)}, got {domain_by!r}")
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"raw MovieLens folder not found: {raw}")
    inter_path, item_path, user_path = (raw / FILES[k][0] for k in ("inter", "item", "user"))
    movies, users = read_movies(item_path), read_users(user_path)
    ratings = read_ratings(inter_path, max_rows)
    for r in ratings:
        if r.item_id not in movies:
            raise DataError(str(inter_path), r.line, "item_id", f"movie {r.item_id!r} is not in {item_path.name}")
        if r.user_id not in users:
            raise DataError(str(inter_path), r.line, "user_id", f"user {r.user_id!r} is not in {user_path.name}")
    kept, dropped = drop_duplicates(ratings, key=lambda r: (r.user_id, r.item_id, r.timestamp))

    raw_of = [raw_domain(domain_by, movies[r.item_id], users[r.user_id]) for r in kept]
    mapping = merge_small_domains(Counter(raw_of), min_domain_rows)
    duplicates: Counter = Counter()
    for r in dropped:
        duplicates[mapping.get(raw_domain(domain_by, movies[r.item_id], users[r.user_id]), OTHER_DOMAIN)] += 1

    samples = []
    for r, raw_name in zip(kept, raw_of):
        movie, user = movies[r.item_id], users[r.user_id]
        extra = {"year": movie.year, "genres": ", ".join(movie.genres), "genre": movie.genres[0],
                 "age": str(user.age), "age_band": age_band_text(user.age),
                 "gender": GENDERS.get(user.gender.upper(), user.gender), "occupation": user.occupation}
        samples.append(Sample(domain=mapping[raw_name], user_id=r.user_id, item_id=r.item_id,
                              label=int(r.rating > 3), timestamp=r.timestamp, title=movie.title, extra=extra))
    samples.sort(key=lambda s: (s.timestamp, s.user_id, s.item_id))
    attach_histories(samples, k=history_k)
    all_domains = {d: 0 for d in mapping.values()}
    all_domains.update(duplicates)
    return samples, all_domains, mapping


def prepare_movielens(raw_dir: PathLike, out_dir: PathLike, domain_by: str = "genre", history_k: int = 5,
                      fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), max_rows: Optional[int] = None,
                      min_domain_rows: int = DEFAULT_MIN_DOMAIN_ROWS,
                      holdout_domains: Optional[Sequence[str]] = None) -> PrepareReport:
    """Build a dataset folder from the MovieLens 100K atomic files; see the module docstring.

    ``max_rows`` reads only the first N ratings (file order); ``holdout_domains``
    defaults to :data:`DEFAULT_HOLDOUT` for the grouping when that domain exists.
    """
    from unictr_core.data.dataset import split_by_time, write_dataset

    samples, duplicates, mapping = load_movielens(raw_dir, domain_by, history_k, max_rows, min_domain_rows)
    train, valid, test = split_by_time(samples, fractions=fractions)
    present = {s.domain for s in samples}
    if holdout_domains is None:
        holdout = [DEFAULT_HOLDOUT[domain_by]] if DEFAULT_HOLDOUT[domain_by] in present else []
    else:
        unknown = [d for d in holdout_domains if d not in present]
        if unknown:
            raise ValueError(f"holdout domain(s) {unknown} not in the prepared domains {sorted(present)}")
        holdout = list(holdout_domains)
    merged = sorted(raw for raw, final in mapping.items() if final == OTHER_DOMAIN and raw != OTHER_DOMAIN)
    notes = []
    if merged:
        notes.append(f"merged into '{OTHER_DOMAIN}' (fewer than {min_domain_rows} rows each): {', '.join(merged)}")
    meta = {
        "name": f"movielens-100k-{domain_by}",
        "description": (f"MovieLens 100K, domains by {domain_by}; label = rating > 3; history = titles of the "
                        f"last {history_k} positively rated movies strictly earlier in time."),
        "holdout_domains": holdout,
        "provenance": PROVENANCE + f" Raw folder: {raw_dir}.",
        "domain_by": domain_by,
        "min_domain_rows": min_domain_rows,
        "merged_into_other": merged,
        "duplicates_dropped": dict(duplicates),
        "label_rule": "rating > 3",
        "history_k": history_k,
        "split": {"method": "by time, per domain", "fractions": list(fractions)},
        "max_rows": max_rows,
        "template": TEMPLATE,
        "fitted_on_train": "nothing is fitted (domain merging uses row counts of all rows, no labels)",
    }
    write_dataset(out_dir, train, valid, test, meta)
    return build_report(str(out_dir), {"train": train, "valid": valid, "test": test}, duplicates, holdout, notes)
