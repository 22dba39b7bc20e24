"""Amazon Review Data (2018 or 2014 release) -> a UniCTR dataset folder.

Input (``raw_dir``): one gzip review file per category, named
``<Category>_5.json.gz`` (5-core) or ``<Category>.json.gz`` (2018 release) or
``reviews_<Category>_5.json.gz`` / ``reviews_<Category>.json.gz`` (2014
release), and optionally a metadata file ``meta_<Category>.json.gz`` next to it.
Lines are JSON objects; the 2014 metadata lines are Python literals (single
quotes), read with ``ast.literal_eval`` (never ``eval``). The 2014 metadata
has ``categories`` (a list of category paths) where the 2018 one has
``category`` (one path); both are read.

What :func:`prepare_amazon2018` does, in order:

1. reads every review (``reviewerID``, ``asin``, ``overall`` 1-5,
   ``unixReviewTime``, optional ``style``), validating each line;
2. drops duplicate (user, item, time) rows per category, keeping the first,
   and counts them;
3. item text: from the metadata where the category has a metadata file: title,
   brand, price (``"$25.00"`` -> ``"25.00"``) and ``extra["category_path"]``
   (``"Gift Cards > Gift Card Accessories"``); every value is cleaned
   (:mod:`unictr_core.adapters.text`: HTML entities and tags removed,
   markup-only values dropped, whitespace normalised, length capped). When the
   title is missing or junk, it falls back, in this order, to the first sentence
   of ``description``, the last level of the category path, the brand; how many
   rows used each source is recorded in ``dataset.yaml`` (``title_source``).
   The review row's ``style`` attributes go to ``extra["style"]``
   (``"Size: Large, Color: Black"``); without metadata an item has no title (its
   history text is its asin);
4. label = ``overall > 3``;
5. history = the user's last ``history_k`` positively rated items strictly
   earlier in time, across all categories, oldest first;
6. splits every domain by time (80/10/10 by default);
7. fits price quartile bins per domain on the TRAIN rows only and stores the bin
   in ``extra["price_bin"]`` (absent when a row has no price);
8. writes the folder with :func:`unictr_core.data.dataset.write_dataset`, with
   :data:`TEMPLATE`, a prompt template that renders every field above, in
   ``dataset.yaml``.

Domain names are the snake_case category (``AMAZON_FASHION`` -> ``fashion``).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from unictr_core.adapters.common import PrepareReport, build_report, drop_duplicates, snake_case
from unictr_core.adapters.text import cap, clean_text, first_sentence
from unictr_core.data.data_io import MAX_DEPTH, MAX_LINE_BYTES, TIMESTAMP_RANGE, bounded_int, check_fields
from unictr_core.data.schema import DataError, Sample, price_value

PathLike = Union[str, Path]

#: Category names whose domain name is not simply their snake_case form.
DOMAIN_ALIASES = {"AMAZON_FASHION": "fashion"}
#: Domain used for zero-shot evaluation when present (excluded from joint training by default).
DEFAULT_HOLDOUT = ("all_beauty",)
REVIEW_SUFFIXES = ("_5.json.gz", ".json.gz")
REVIEW_PREFIX_2014 = "reviews_"
META_PREFIX = "meta_"
PRICE_BIN_COUNT = 4
MAX_PRICE = 1e12  # a larger "price" is junk (e.g. a 400-digit number): treated as no price
MAX_BLANK_RUN = 100_000
#: caps (characters) of the item texts; history items are titles, so they stay short
TITLE_CHARS, BRAND_CHARS, CATEGORY_CHARS, STYLE_CHARS, HISTORY_CHARS = 100, 40, 100, 80, 48
#: where a title may come from, in order of preference
TITLE_SOURCES = ("title", "description", "category", "brand")
#: the dataset's prompt template: every field the baselines see, in words
TEMPLATE = {
    "parts": [
        "{domain_name}:",
        " The user ID is {user_id}, who clicked {history} recently.",
        " The ID of the current product is {item_id}",
        ", the title is '{title}'",
        ", the brand is '{brand}'",
        ", the price is {price}$",
        " (quartile {price_bin})",
        ", the category is '{category_path}'",
        ", the style is '{style}'",
        ".",
    ],
    "history_item": "'{text}'",
    "history_separator": ", ",
}

PROVENANCE = (
    "Amazon Review Data (2018), Ni, Li and McAuley, EMNLP 2019 (research use); "
    "https://nijianmo.github.io/amazon/index.html. Label = overall > 3."
)


@dataclass(frozen=True)
class Review:
    """One validated review row."""

    category: str
    user_id: str
    asin: str
    rating: float
    timestamp: int
    style: str
    line: int


@dataclass(frozen=True)
class ItemMeta:
    title: Optional[str]
    brand: Optional[str]
    price: Optional[str]
    category_path: Optional[str] = None
    title_source: Optional[str] = None  # one of TITLE_SOURCES, None when no title


# ----------------------------------------------------------------------------
# file discovery
# ----------------------------------------------------------------------------

def domain_name(category: str) -> str:
    """``"Gift_Cards"`` -> ``"gift_cards"``; ``"AMAZON_FASHION"`` -> ``"fashion"``."""
    return DOMAIN_ALIASES.get(category, snake_case(category))


def find_category_files(raw_dir: PathLike, categories: Optional[Sequence[str]] = None
                        ) -> dict[str, tuple[Path, Optional[Path]]]:
    """Map category -> (review file, metadata file or None), sorted by category.

    ``categories`` may name raw categories (``Gift_Cards``) or domain names
    (``gift_cards``); an unknown one is an error that lists what exists.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"raw Amazon 2018 folder not found: {raw}")
    found: dict[str, Path] = {}
    for path in sorted(raw.iterdir()):
        name = path.name
        if name.startswith(META_PREFIX) or not path.is_file():
            continue
        if name.startswith(REVIEW_PREFIX_2014):  # the 2014 release: reviews_<Category>[_5].json.gz
            name = name[len(REVIEW_PREFIX_2014):]
        for suffix in REVIEW_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                category = name[: -len(suffix)]
                # prefer the 5-core file when both exist
                found.setdefault(category, path)
                break
    if not found:
        raise FileNotFoundError(f"no review files (*_5.json.gz, *.json.gz, reviews_*.json.gz) in {raw}")
    if categories:
        by_domain = {domain_name(c): c for c in found}
        chosen = []
        for wanted in categories:
            category = wanted if wanted in found else by_domain.get(wanted)
            if category is None:
                known = ", ".join(f"{c} ({domain_name(c)})" for c in sorted(found))
                raise ValueError(f"unknown category {wanted!r} in {raw}; available: {known}")
            chosen.append(category)
        found = {c: found[c] for c in chosen}
    out = {}
    for category in sorted(found):
        meta = raw / f"{META_PREFIX}{category}.json.gz"
        out[category] = (found[category], meta if meta.is_file() else None)
    return out


# ----------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------

def parse_line(line: str, path: Path, line_no: int) -> object:
    """One line as JSON, else (the 2014 metadata) as a Python literal, read safely with ``ast.literal_eval``.

    Either way the value then passes the row reader's checks (:func:`unictr_core.data.data_io.check_value`:
    nesting, numbers of at most 64 digits, finite numbers, valid Unicode), so every problem is a DataError
    naming the file, the line and the field.
    """
    try:
        obj = json.loads(line, parse_int=bounded_int)
    except json.JSONDecodeError as exc:
        obj = _python_literal(line, path, line_no, f"invalid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        raise DataError(str(path), line_no, None, f"nested too deeply (more than {MAX_DEPTH} levels allowed)") \
            from None
    except ValueError as exc:
        raise DataError(str(path), line_no, None, f"a number JSON cannot hold ({exc})") from None
    if isinstance(obj, dict):
        check_fields(obj, str(path), line_no, max_text=None)  # texts are cleaned and capped later
    return obj


def _python_literal(line: str, path: Path, line_no: int, error: str) -> object:
    if line.lstrip().startswith("{"):
        try:  # Python's parser bounds nesting itself (a SyntaxError beyond 200 levels)
            return ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
            error += f", and not a Python literal either ({type(exc).__name__})"
    raise DataError(str(path), line_no, None, error)


def _lines(handle, path: Path) -> Iterator[tuple[int, str]]:
    """(1-based number, text) of each non-blank line; lines of at most MAX_LINE_BYTES characters, and no more
    than MAX_BLANK_RUN blank lines in a row (a few hundred KB of gzip can hold hundreds of millions)."""
    line_no = blank_run = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        line_no += 1
        if len(line) > MAX_LINE_BYTES:
            raise DataError(str(path), line_no, None, f"line longer than {MAX_LINE_BYTES:,} characters")
        if line.strip():
            blank_run = 0
            yield line_no, line
            continue
        blank_run += 1
        if blank_run > MAX_BLANK_RUN:
            raise DataError(str(path), line_no, None, f"more than {MAX_BLANK_RUN:,} blank lines in a row "
                            "(not a JSON-lines file?)")


def _json_lines(path: Path, max_rows: Optional[int] = None) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, object) for the non-blank lines of a gzip JSON-lines file
    (or Python-literal lines, as in the 2014 metadata)."""
    count = 0
    line_no = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_no, line in _lines(handle, path):
                if max_rows is not None and count >= max_rows:
                    return
                obj = parse_line(line, path, line_no)
                if not isinstance(obj, dict):
                    raise DataError(str(path), line_no, None, f"expected a JSON object, got {type(obj).__name__}")
                count += 1
                yield line_no, obj
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        where = line_no + 1 if line_no else None
        raise DataError(str(path), where, None,
                        f"cannot read as gzip-compressed UTF-8 JSON lines ({type(exc).__name__}: {exc})") from None


def style_text(style: object) -> str:
    """``{"Size:": " Large", "Color:": " Black"}`` -> ``"Size: Large, Color: Black"``."""
    if not isinstance(style, dict):
        return ""
    parts = []
    for key, value in style.items():
        k = clean_text(str(key).strip().rstrip(":").strip())
        v = clean_text(value)
        if k and v:
            parts.append(f"{k}: {v}")
    return cap(", ".join(parts), STYLE_CHARS)


def read_reviews(path: PathLike, category: str, max_rows: Optional[int] = None) -> list[Review]:
    """Validated reviews of one category file (the first ``max_rows`` lines when given)."""
    path = Path(path)
    out = []
    for line_no, obj in _json_lines(path, max_rows):
        def need_str(field: str) -> str:
            value = obj.get(field)
            if value is None:
                raise DataError(str(path), line_no, field, "required field is missing")
            if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
                raise DataError(str(path), line_no, field, f"expected a non-empty string, got {value!r}")
            return str(value).strip()

        user, asin = need_str("reviewerID"), need_str("asin")
        rating = obj.get("overall")
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not 1 <= rating <= 5:
            raise DataError(str(path), line_no, "overall", f"expected a rating between 1 and 5, got {rating!r}")
        stamp = obj.get("unixReviewTime")
        if isinstance(stamp, float) and stamp.is_integer():
            stamp = int(stamp)
        if isinstance(stamp, str) and stamp.strip().isdigit() and len(stamp.strip()) <= 19:
            stamp = int(stamp.strip())
        if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 <= stamp < TIMESTAMP_RANGE:
            raise DataError(str(path), line_no, "unixReviewTime",
                            f"expected a non-negative integer unix time, got {stamp!r}")
        out.append(Review(category, user, asin, float(rating), stamp, style_text(obj.get("style")), line_no))
    return out


_PRICE_RE = re.compile(r"^\$?\s*(\d[\d,]*(?:\.\d+)?)(?:\s*-\s*\$?\s*(\d[\d,]*(?:\.\d+)?))?$")


def parse_price(value: object) -> Optional[str]:
    """``"$25.00"`` -> ``"25.00"``, ``"$1,250.00"`` -> ``"1250.00"``, a range
    ``"$10.00 - $20.00"`` -> ``"10.00-20.00"``; empty or unparsable (the raw files
    carry some HTML/CSS junk in this field) -> ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)  # integers are at most 64 digits here (parse_line), so this cannot overflow
        return f"{number:.2f}" if 0 <= number < MAX_PRICE else None
    if not isinstance(value, str):
        return None
    match = _PRICE_RE.match(value.strip())
    if not match:
        return None
    low = match.group(1).replace(",", "")
    high = match.group(2)
    if float(low) >= MAX_PRICE or (high is not None and float(high.replace(",", "")) >= MAX_PRICE):
        return None
    return low if high is None else f"{low}-{high.replace(',', '')}"


def category_levels(obj: dict) -> list[str]:
    """The cleaned category path of a metadata row: 2018 ``category`` (one path) or 2014 ``categories``
    (a list of paths; the first is used). Markup-only levels, sentences (some 2018 rows carry product
    claims in the path) and repeats of the previous level are dropped."""
    path = obj.get("category")
    if path is None:
        paths = obj.get("categories")
        path = paths[0] if isinstance(paths, list) and paths and isinstance(paths[0], list) else paths
    if not isinstance(path, list):
        return []
    levels: list[str] = []
    for raw in path:
        level = clean_text(raw, limit=CATEGORY_CHARS)
        if level and not level.endswith((".", "…")) and (not levels or levels[-1] != level):
            levels.append(level)
    return levels


def item_meta(obj: dict) -> ItemMeta:
    """The cleaned item text of one metadata row, with the title's fallbacks (see the module docstring)."""
    levels = category_levels(obj)
    brand = clean_text(obj.get("brand"), BRAND_CHARS)
    candidates = {"title": clean_text(obj.get("title"), TITLE_CHARS),
                  "description": first_sentence(obj.get("description"), TITLE_CHARS),
                  "category": levels[-1] if levels else None,
                  "brand": brand}
    source = next((name for name in TITLE_SOURCES if candidates[name]), None)
    return ItemMeta(candidates[source] if source else None, brand, parse_price(obj.get("price")),
                    cap(" > ".join(levels), CATEGORY_CHARS) if levels else None, source)


def read_metadata(path: PathLike, asins: Optional[set[str]] = None,
                  max_rows: Optional[int] = None) -> dict[str, ItemMeta]:
    """Cleaned item text per asin (first occurrence wins); only ``asins`` when given."""
    path = Path(path)
    out: dict[str, ItemMeta] = {}
    for line_no, obj in _json_lines(path, max_rows):
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin.strip():
            raise DataError(str(path), line_no, "asin", f"expected a non-empty string, got {asin!r}")
        asin = asin.strip()
        if (asins is not None and asin not in asins) or asin in out:
            continue
        out[asin] = item_meta(obj)
    return out


# ----------------------------------------------------------------------------
# price bins (fitted on train only)
# ----------------------------------------------------------------------------

def fit_price_bins(train: Sequence[Sample], bins: int = PRICE_BIN_COUNT) -> dict[str, list[float]]:
    """Per domain, the inner quantile edges of the train rows' prices (duplicates removed)."""
    prices: dict[str, list[float]] = {}
    for s in train:
        value = price_value(s.price)
        if value is not None:
            prices.setdefault(s.domain, []).append(value)
    edges: dict[str, list[float]] = {}
    for domain, values in sorted(prices.items()):
        values.sort()
        cuts = []
        for i in range(1, bins):
            cut = values[min(len(values) - 1, (i * len(values)) // bins)]
            if not cuts or cut > cuts[-1]:
                cuts.append(cut)
        edges[domain] = cuts
    return edges


def price_bin(sample: Sample, edges: dict[str, list[float]]) -> Optional[str]:
    """``"q0"`` .. ``"qN"`` (the number of inner edges below the price), or ``None`` (no price, or no
    training prices in the domain)."""
    value = price_value(sample.price)
    cuts = edges.get(sample.domain)
    if value is None or cuts is None:
        return None
    return f"q{sum(value >= c for c in cuts)}"


# ----------------------------------------------------------------------------
# samples
# ----------------------------------------------------------------------------

def review_to_sample(review: Review, meta: Optional[dict[str, ItemMeta]]) -> Sample:
    """One review row as a sample (history is attached later)."""
    # never put the rating in ``extra``: the label is derived from it
    extra = {}
    if review.style:
        extra["style"] = review.style
    item = (meta or {}).get(review.asin, ItemMeta(None, None, None))
    title, brand, price = item.title, item.brand, item.price
    if item.category_path:
        extra["category_path"] = item.category_path
    return Sample(domain=domain_name(review.category), user_id=review.user_id, item_id=review.asin,
                  label=int(review.rating > 3), timestamp=review.timestamp, title=title, brand=brand,
                  price=price, extra=extra)


def history_text(sample: Sample) -> str:
    """An item's text in later histories: its title (else asin), capped at ``HISTORY_CHARS`` to keep prompts short."""
    return cap(sample.title or sample.item_id, HISTORY_CHARS)


def load_amazon2018(raw_dir: PathLike, categories: Optional[Sequence[str]] = None, history_k: int = 5,
                    max_rows: Optional[int] = None) -> tuple[list[Sample], dict[str, int], dict[str, dict]]:
    """Read, de-duplicate and convert every category; attach histories across categories.

    Returns ``(samples, duplicates dropped per domain, per-domain info for dataset.yaml)``.
    """
    from unictr_core.data.history import attach_histories

    samples: list[Sample] = []
    duplicates: dict[str, int] = {}
    info: dict[str, dict] = {}
    for category, (review_path, meta_path) in find_category_files(raw_dir, categories).items():
        reviews = read_reviews(review_path, category, max_rows)
        if not reviews:
            raise DataError(str(review_path), None, None, "no review rows")
        kept, dropped = drop_duplicates(reviews, key=lambda r: (r.user_id, r.asin, r.timestamp))
        domain = domain_name(category)
        duplicates[domain] = len(dropped)
        asins = {r.asin for r in kept}
        # only the reviewed items' metadata is kept (full metadata files are large)
        meta = read_metadata(meta_path, asins=asins) if meta_path is not None else None
        missing = len(asins) if meta is None else len(asins - set(meta))
        info[domain] = {
            "category": category,
            "review_file": review_path.name,
            "metadata_file": meta_path.name if meta_path else None,
            "item_text": ("metadata title/brand/price/category path (cleaned) + review 'style'" if meta is not None
                          else "no metadata: no title (history text = asin); review 'style' attributes"),
            "items_without_metadata": missing,
            "duplicates_dropped": len(dropped),
        }
        sources = Counter((meta or {}).get(r.asin, ItemMeta(None, None, None)).title_source or "none"
                          for r in kept)
        info[domain]["title_source"] = {name: sources.get(name, 0) for name in (*TITLE_SOURCES, "none")}
        samples.extend(review_to_sample(r, meta) for r in kept)
    # stable order: by time, then domain/user/item, so histories and splits are reproducible
    samples.sort(key=lambda s: (s.timestamp, s.domain, s.user_id, s.item_id))
    attach_histories(samples, k=history_k, text_of=history_text)
    return samples, duplicates, info


def prepare_amazon2018(raw_dir: PathLike, out_dir: PathLike, categories: Optional[Sequence[str]] = None,
                       history_k: int = 5, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                       max_rows: Optional[int] = None, seed: int = 0,
                       holdout_domains: Optional[Sequence[str]] = None) -> PrepareReport:
    """Build a dataset folder from Amazon 2018 review files; see the module docstring.

    ``max_rows`` reads only the first N rows of each review file (for quick runs);
    ``seed`` is recorded in ``dataset.yaml`` (the time split itself is deterministic).
    ``holdout_domains`` defaults to ``all_beauty`` when that domain is present.
    """
    from unictr_core.data.dataset import split_by_time, write_dataset

    samples, duplicates, info = load_amazon2018(raw_dir, categories, history_k, max_rows)
    train, valid, test = split_by_time(samples, fractions=fractions)
    edges = fit_price_bins(train)
    for s in (*train, *valid, *test):
        band = price_bin(s, edges)
        if band is not None:
            s.extra["price_bin"] = band

    present = {s.domain for s in samples}
    wanted = DEFAULT_HOLDOUT if holdout_domains is None else tuple(holdout_domains)
    unknown = [d for d in wanted if d not in present and holdout_domains is not None]
    if unknown:
        raise ValueError(f"holdout domain(s) {unknown} not in the prepared domains {sorted(present)}")
    holdout = [d for d in wanted if d in present]
    no_meta = sorted(d for d, v in info.items() if v["metadata_file"] is None)
    notes = [f"duplicate (user, item, time) rows dropped: {duplicates}"]
    if no_meta:
        notes.append(f"no metadata for {', '.join(no_meta)}: item text = asin + review 'style' attributes")
    for domain, values in sorted(info.items()):
        if values["metadata_file"] is not None:
            notes.append(f"{domain} title source (rows): " + ", ".join(f"{k} {v}" for k, v in
                                                                         values["title_source"].items()))
    meta = {
        "name": "amazon2018",
        "description": ("Amazon Review Data (2018 or 2014 files), one domain per category; label = overall > 3; "
                        f"history = last {history_k} positively rated items strictly earlier, across categories."),
        "holdout_domains": holdout,
        "provenance": PROVENANCE + f" Raw folder: {Path(raw_dir)}.",
        "domains_without_metadata": no_meta,
        "categories": info,
        "duplicates_dropped": duplicates,
        "label_rule": "overall > 3",
        "history_k": history_k,
        "split": {"method": "by time, per domain", "fractions": list(fractions)},
        "max_rows_per_file": max_rows,
        "seed": seed,
        "template": TEMPLATE,
        "fitted_on_train": {
            "price_bins": {"field": "extra.price_bin",
                           "method": f"{PRICE_BIN_COUNT}-quantile inner edges of train prices, per domain",
                           "edges": edges},
        },
    }
    write_dataset(out_dir, train, valid, test, meta)
    return build_report(str(out_dir), {"train": train, "valid": valid, "test": test}, duplicates, holdout, notes)
