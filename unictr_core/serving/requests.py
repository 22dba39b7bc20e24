"""The body of ``POST /v1/predict``: parsed and validated with the same rules and messages as sample files.

Body: ``{"samples": [{...sample...}, ...], "domain": "optional-override"}``. Each
sample is checked by :func:`unictr_core.data.data_io.sample_from_mapping`, so a bad
row gets the one-line message the CLI gives for a bad line of a file, with
``request body, row N`` in place of ``file, line N``.
"""

from __future__ import annotations

from typing import Optional

from unictr_core.data.data_io import load_json, sample_from_mapping, validate_domain_name
from unictr_core.data.schema import DataError, Sample

SOURCE = "request body"
BODY_FIELDS = ("samples", "domain")


class RequestError(ValueError):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_predict_body(body: bytes, max_request_rows: int) -> tuple[list[Sample], Optional[str]]:
    """The samples of a predict request (with ``domain`` applied to every row) and the override domain."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"{SOURCE}: not valid UTF-8 text ({exc.reason})") from None
    try:  # the rows' own parser: nesting and number length bounded, NaN / Infinity refused
        data = load_json(text, SOURCE, None, None)
    except DataError as exc:
        raise RequestError(400, str(exc)) from None
    if not isinstance(data, dict):
        raise RequestError(422, f"{SOURCE}: expected a JSON object with 'samples' (a list of sample objects), "
                                f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(BODY_FIELDS))
    if unknown:
        raise RequestError(422, f"{SOURCE}, field '{unknown[0]}': unknown field (expected 'samples' and "
                                "optionally 'domain')")
    rows = data.get("samples")
    if not isinstance(rows, list) or not rows:
        raise RequestError(422, f"{SOURCE}, field 'samples': expected a non-empty list of sample objects, "
                                f"got {'nothing' if rows is None else type(rows).__name__}")
    if len(rows) > max_request_rows:
        raise RequestError(413, f"{SOURCE}, field 'samples': {len(rows)} rows, more than the limit of "
                                f"{max_request_rows} per request (--max-request-rows); split the request")
    domain = data.get("domain")
    samples = []
    try:
        if domain is not None:
            validate_domain_name(domain, SOURCE)
        for number, row in enumerate(rows, start=1):
            where = f"{SOURCE}, row {number}"
            if not isinstance(row, dict):
                raise DataError(where, None, None, f"expected a JSON object per sample, got {type(row).__name__}")
            sample = sample_from_mapping(row, where)
            if domain is not None:
                sample.domain = domain
            samples.append(sample)
    except DataError as exc:
        raise RequestError(422, str(exc)) from None
    return samples, domain
