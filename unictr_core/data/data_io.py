"""Reading and writing samples: JSONL and CSV files, validated row by row.

``read_samples(path)`` reads ``.jsonl`` (one JSON object per line, blank lines
ignored) or ``.csv`` (header row; the ``history`` column holds a JSON list of
strings or texts separated by ``" || "``; an empty cell means missing). Keys or
columns that are not sample fields are kept in ``extra`` as strings.

Every problem is reported as :class:`unictr_core.data.schema.DataError` naming the
file, the 1-based line, the field and what was expected.

``write_samples(path, samples)`` writes JSONL (or CSV for a ``.csv`` path)
atomically: a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from unictr_core.data.files import atomic_write_text
from unictr_core.data.schema import CORE_FIELDS, REQUIRED_FIELDS, DataError, Sample

DOMAIN_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
_DOMAIN_RE = re.compile(DOMAIN_PATTERN)
HISTORY_SEPARATOR = " || "
MAX_DEPTH = 32  # deepest nesting of lists/objects accepted inside one field
MAX_TEXT_CHARS = 100_000  # longest text accepted in one field (a key, a value, one history entry)
MAX_INT_DIGITS = 64  # largest integer accepted anywhere in a row (IDs, timestamps, extra fields)
MAX_LINE_BYTES = 16 * 1024 * 1024  # longest JSONL line read (a CSV field: csv's own limit, 131,072 characters)
TIMESTAMP_RANGE = 2**63  # timestamps are 64-bit signed seconds
SUPPORTED_SUFFIXES = (".jsonl", ".csv")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------
# field validation
# ----------------------------------------------------------------------------

def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_domain_name(name: Any, source: str = "<domain>", line: Optional[int] = None) -> str:
    """Return ``name`` when it is a valid domain name, else raise :class:`DataError`."""
    if not isinstance(name, str) or not _DOMAIN_RE.fullmatch(name):
        raise DataError(source, line, "domain",
                        f"expected a domain name matching {DOMAIN_PATTERN} "
                        f"(lowercase letters, digits, '_' or '-', at most 64 characters), got {_describe(name)}")
    return name


def check_value(value: Any, field: str, source: str, line: Optional[int],
                max_text: Optional[int] = MAX_TEXT_CHARS) -> None:
    """Refuse what no field may hold: lone surrogates, NaN/Infinity, nesting deeper than MAX_DEPTH, text longer
    than ``max_text`` characters (None: any length), integers of more than MAX_INT_DIGITS digits.

    Iterative (no recursion), so a hostile value cannot exhaust the stack.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if max_text is not None and len(item) > max_text:
                raise DataError(source, line, field, f"text of {len(item):,} characters, more than the limit of "
                                f"{max_text:,}")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(source, line, field, f"text holds a lone surrogate {item[exc.start]!r} at "
                                f"position {exc.start} (not valid Unicode)") from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise DataError(source, line, field, f"expected a finite number, got {item!r}")
        elif isinstance(item, LongNumber) or (isinstance(item, int) and abs(item) >= 10**MAX_INT_DIGITS):
            raise DataError(source, line, field, f"a number of more than {MAX_INT_DIGITS} digits")
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise DataError(source, line, field, f"value nested deeper than {MAX_DEPTH} levels")
            children = list(item.items()) if isinstance(item, dict) else item
            for child in children:
                if isinstance(item, dict):
                    stack.append((child[0], depth + 1))
                    child = child[1]
                stack.append((child, depth + 1))


def load_json(text: str, source: str, line: Optional[int], field: Optional[str]) -> Any:
    """``json.loads`` whose every failure (syntax, NaN/Infinity, nesting, numbers too long) is a
    :class:`DataError` naming ``source``, ``line`` and ``field``.

    Integers of more than MAX_INT_DIGITS digits are refused while parsing, before Python converts them (no
    "Exceeds the limit (4300 digits)"); nesting beyond the parser's recursion limit is a DataError too.
    """
    def no_constants(name: str) -> Any:
        raise DataError(source, line, field, f"{name} is not a number JSON allows (expected a finite number)")

    try:
        return json.loads(text, parse_constant=no_constants, parse_int=bounded_int)
    except json.JSONDecodeError as exc:
        raise DataError(source, line, field, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(source, line, field, f"JSON nested too deeply (more than {MAX_DEPTH} levels allowed)") \
            from None
    except DataError:
        raise
    except ValueError as exc:  # e.g. a float literal too long to convert
        raise DataError(source, line, field, f"a number JSON cannot hold ({exc})") from None


class LongNumber:
    """An integer literal of more than MAX_INT_DIGITS digits, kept unconverted: :func:`check_value` refuses it
    naming its field."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a number of {self.digits:,} digits>"


def bounded_int(literal: str):
    """``json.loads``'s ``parse_int``: the integer, or a :class:`LongNumber` beyond MAX_INT_DIGITS digits."""
    digits = len(literal.lstrip("-"))
    return LongNumber(digits) if digits > MAX_INT_DIGITS else int(literal)


def _parse_id(value: Any, field: str, source: str, line: Optional[int]) -> str:
    if value is None:
        raise DataError(source, line, field, "required field is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(source, line, field, f"expected a string (or integer) identifier, got {_describe(value)}")
    text = str(value).strip()
    if not text:
        raise DataError(source, line, field, "required field is empty")
    return text


def _parse_label(value: Any, source: str, line: Optional[int]) -> Optional[int]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}
        if text in mapping:
            return mapping[text]
    raise DataError(source, line, "label", f"expected 0 or 1 (or true/false), got {_describe(value)}")


def _parse_timestamp(value: Any, source: str, line: Optional[int]) -> Optional[int]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seconds: Optional[int] = None
    digits = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"[+-]?(\d+)(\.0*)?", value.strip())
        digits = None if match is None else len(match.group(1))
        if digits is not None and digits <= 19:  # counted before int(): never Python's 4,300-digit limit
            seconds = int(value.strip().split(".")[0])
    if seconds is None and digits is None:
        raise DataError(source, line, "timestamp", f"expected an integer (seconds), got {_describe(value)}")
    if seconds is None or not -TIMESTAMP_RANGE <= seconds < TIMESTAMP_RANGE:
        shown = f"a number of {digits:,} digits" if digits is not None else _describe(value)
        raise DataError(source, line, "timestamp", f"expected an integer (seconds) of at most 64 bits, got {shown}")
    return seconds


def _parse_text(value: Any, field: str, source: str, line: Optional[int]) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(source, line, field, f"expected text, got {_describe(value)}")
    if field == "price" and _is_non_finite(value):
        raise DataError(source, line, field, f"expected a finite price, got {_describe(value)}")
    text = str(value)
    return text if text.strip() else None


def _is_non_finite(value: Any) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _parse_history(value: Any, source: str, line: Optional[int], from_csv: bool) -> list[str]:
    if value is None:
        return []
    if from_csv and isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            value = load_json(text, source, line, "history")
            check_value(value, "history", source, line)
        else:
            return [part.strip() for part in text.split(HISTORY_SEPARATOR.strip()) if part.strip()]
    if not isinstance(value, list):
        raise DataError(source, line, "history", f"expected a list of strings, got {_describe(value)}")
    for position, entry in enumerate(value):
        if not isinstance(entry, str):
            raise DataError(source, line, "history",
                            f"expected a list of strings, but entry {position} is {_describe(entry)}")
    return list(value)


def _stringify(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _parse_extra(value: Any, source: str, line: Optional[int], from_csv: bool) -> dict[str, str]:
    if value is None or (from_csv and isinstance(value, str) and not value.strip()):
        return {}
    if from_csv and isinstance(value, str):
        value = load_json(value, source, line, "extra")
        check_value(value, "extra", source, line)
    if not isinstance(value, dict):
        raise DataError(source, line, "extra", f"expected an object of extra fields, got {_describe(value)}")
    return {str(k): _stringify(v) for k, v in value.items() if v is not None}


def _field_label(key: Any) -> str:
    """A key as errors name it: printable (lone surrogates replaced), at most 60 characters."""
    text = str(key)[:61].encode("utf-8", "replace").decode()
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(row: Mapping[Any, Any], source: str, line: Optional[int],
                 max_text: Optional[int] = MAX_TEXT_CHARS) -> None:
    """:func:`check_value` on every key and value of a row, each error naming its field."""
    for key, value in row.items():
        label = _field_label(key)
        check_value(key, label, source, line, max_text)
        check_value(value, label, source, line, max_text)


def sample_from_mapping(row: Mapping[str, Any], source: str = "<data>", line: Optional[int] = None,
                        require_labels: bool = False, from_csv: bool = False) -> Sample:
    """Validate one record (a JSON object or a CSV row) and build a :class:`Sample`."""
    values = dict(row)
    check_fields(values, source, line)
    for name in REQUIRED_FIELDS:
        value = values.get(name)
        if value is None or (from_csv and isinstance(value, str) and not value.strip()):
            if value is None and name not in values:
                raise DataError(source, line, name, "required field is missing")
            raise DataError(source, line, name, "required field is empty")
    domain = values.get("domain")  # exactly as given: "books\n" or " books " is not "books"
    validate_domain_name(domain, source, line)
    label = _parse_label(values.get("label"), source, line)
    if require_labels and label is None:
        raise DataError(source, line, "label", "a label (0 or 1) is required here (training / evaluation data)")
    extra = {}
    for key, value in values.items():
        if key in CORE_FIELDS or value is None:
            continue
        if from_csv and isinstance(value, str) and not value.strip():
            continue
        extra[str(key)] = _stringify(value)
    extra.update(_parse_extra(values.get("extra"), source, line, from_csv))
    return Sample(
        domain=domain,
        user_id=_parse_id(values.get("user_id"), "user_id", source, line),
        item_id=_parse_id(values.get("item_id"), "item_id", source, line),
        label=label,
        timestamp=_parse_timestamp(values.get("timestamp"), source, line),
        title=_parse_text(values.get("title"), "title", source, line),
        brand=_parse_text(values.get("brand"), "brand", source, line),
        price=_parse_text(values.get("price"), "price", source, line),
        history=_parse_history(values.get("history"), source, line, from_csv),
        extra=extra,
    )


# ----------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------

def _check_path(path: PathLike) -> tuple[Path, str]:
    p = Path(path)
    source = str(path)
    if p.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DataError(source, None, None,
                        f"unsupported file extension {p.suffix or '(none)'!r}; expected one of "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if not p.exists():
        raise DataError(source, None, None, "file not found")
    if not p.is_file():
        raise DataError(source, None, None, "not a regular file")
    return p, source


def _lines(handle, source: str) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each line, each at most MAX_LINE_BYTES long (read no further)."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DataError(source, number, None, f"line longer than the limit of {MAX_LINE_BYTES:,} bytes")
        yield number, raw


def _iter_jsonl(p: Path, source: str, require_labels: bool) -> Iterator[Sample]:
    with open(p, "rb") as handle:
        for number, raw in _lines(handle, source):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(source, number, None, f"not valid UTF-8 text ({exc.reason})") from None
            if not text.strip():
                continue
            obj = load_json(text, source, number, None)
            if not isinstance(obj, dict):
                raise DataError(source, number, None,
                                f"expected a JSON object per line, got {type(obj).__name__}")
            yield sample_from_mapping(obj, source, number, require_labels)


def _iter_csv(p: Path, source: str, require_labels: bool) -> Iterator[Sample]:
    last_line = 0
    try:
        with open(p, "r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)  # strict: an unterminated or stray quote is an error
            header: Optional[list[str]] = None
            for row in reader:
                start_line, last_line = last_line + 1, reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [name.strip() for name in row]
                    seen = set()
                    for name in header:
                        if not name:
                            raise DataError(source, start_line, None, "empty column name in the header row")
                        if name in seen:
                            raise DataError(source, start_line, name, "column appears twice in the header row")
                        seen.add(name)
                    missing = [name for name in REQUIRED_FIELDS if name not in seen]
                    if missing:
                        raise DataError(source, start_line, missing[0],
                                        f"required column missing from the header row (have: {', '.join(header)})")
                    continue
                if len(row) != len(header):
                    raise DataError(source, start_line, None,
                                    f"expected {len(header)} columns (as in the header), got {len(row)}")
                yield sample_from_mapping(dict(zip(header, row)), source, start_line, require_labels, from_csv=True)
    except UnicodeDecodeError as exc:
        raise DataError(source, None, None, f"not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(source, last_line + 1, None, f"malformed CSV ({exc}; an unterminated quoted field?)"
                        if "end of data" in str(exc) else f"malformed CSV ({exc})") from None


def iter_samples(path: PathLike, require_labels: bool = False) -> Iterator[Sample]:
    """Yield validated samples from a ``.jsonl`` or ``.csv`` file, one at a time."""
    p, source = _check_path(path)
    if p.suffix.lower() == ".csv":
        yield from _iter_csv(p, source, require_labels)
    else:
        yield from _iter_jsonl(p, source, require_labels)


def read_samples(path: PathLike, require_labels: bool = False, require_rows: bool = False) -> list[Sample]:
    """All validated samples of a ``.jsonl`` or ``.csv`` file.

    With ``require_labels=True`` every row must carry a label (training / evaluation data); with
    ``require_rows=True`` a file without any row (empty, blank lines or a header only) is an error.
    """
    samples = list(iter_samples(path, require_labels=require_labels))
    if require_rows and not samples:
        raise DataError(str(path), None, None, "no samples in the file (empty, blank lines or a CSV header only)")
    return samples


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------

def to_jsonl_text(samples: Iterable[Sample]) -> str:
    """Samples as JSONL text: one ``Sample.to_dict()`` JSON object per line."""
    return "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples)


def _csv_text(samples: list[Sample]) -> str:
    extra_keys = sorted({key for s in samples for key in s.extra})
    clashes = [key for key in extra_keys if key in CORE_FIELDS]
    if clashes:
        raise ValueError(f"cannot write CSV: extra field(s) {clashes} clash with sample field names")
    header = [name for name in CORE_FIELDS if name != "extra"] + extra_keys
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for s in samples:
        core = s.to_dict()
        row = []
        for name in header:
            if name == "history":
                row.append(json.dumps(s.history, ensure_ascii=False) if s.history else "")
            elif name in core:
                row.append(str(core[name]))
            else:
                row.append(s.extra.get(name, ""))
        writer.writerow(row)
    return buffer.getvalue()


def write_samples(path: PathLike, samples: Iterable[Sample]) -> None:
    """Write samples atomically: JSONL (one ``Sample.to_dict()`` per line), or CSV for a ``.csv`` path."""
    samples = list(samples)
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        atomic_write_text(path, _csv_text(samples))
    elif suffix == ".jsonl":
        atomic_write_text(path, to_jsonl_text(samples))
    else:
        raise ValueError(f"{path}: unsupported file extension {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(SUPPORTED_SUFFIXES)}")
