"""``POST /v1/rank``: the candidates of one user, best first (see :mod:`unictr_core.modeling.rank`).

Body::

    {"user": {"domain": "books", "user_id": "u1", "history": ["..."]},
     "candidates": [{"item_id": "i1", "title": "..."}, ...],
     "top": 10,                # optional: return only the best K
     "prefix_reuse": true}     # optional (default true): decoder backbones compute the shared prefix once

Answer: ``{"generation", "core_fingerprint", "ranking": {candidates, prefix_reuse, shared_prefix_tokens,
prompt_tokens, note}, "candidates": [{"rank", "candidate", "domain", "user_id", "item_id", "probability",
"predicted_by"}, ...]}``. The candidates count against ``--max-rows``.
"""

from __future__ import annotations

import json
from typing import Optional

from fastapi import Request

from unictr_core.data.schema import DataError, Sample
from unictr_core.modeling.rank import candidate_samples, rank_samples
from unictr_core.serving.requests import RequestError

SOURCE = "request body"
BODY_FIELDS = ("user", "candidates", "top", "prefix_reuse")


def parse_rank_body(body: bytes, max_rows: int) -> tuple[list[Sample], Optional[int], bool]:
    """The candidates as samples, ``top`` and ``prefix_reuse`` of a rank request."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"{SOURCE}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"{SOURCE}: expected a JSON object with 'user' and 'candidates', "
                                f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(BODY_FIELDS))
    if unknown:
        raise RequestError(422, f"{SOURCE}, field '{unknown[0]}': unknown field (expected {', '.join(BODY_FIELDS)})")
    top, reuse = data.get("top"), data.get("prefix_reuse", True)
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
        raise RequestError(422, f"{SOURCE}, field 'top': expected a whole number of at least 1, got {top!r}")
    if not isinstance(reuse, bool):
        raise RequestError(422, f"{SOURCE}, field 'prefix_reuse': expected true or false, got {reuse!r}")
    candidates = data.get("candidates")
    if isinstance(candidates, list) and len(candidates) > max_rows:
        raise RequestError(413, f"{SOURCE}, field 'candidates': {len(candidates)} candidates, more than the limit "
                                f"of {max_rows} per request (--max-request-rows)")
    try:
        samples = candidate_samples(data.get("user"), candidates, SOURCE)
    except DataError as exc:
        raise RequestError(422, str(exc)) from None
    return samples, top, reuse


def add_routes(app, server) -> None:
    """``POST /v1/rank`` on ``app`` (``server``: :class:`unictr_core.serving.app.Server`)."""

    @app.post("/v1/rank")
    async def rank(request: Request):
        """Rank candidate items for one user: probabilities, best first; on a decoder backbone the prompt prefix
        the candidates share runs once (its key/value cache is reused)."""
        body = await server.read_body(request)
        samples, top, reuse = parse_rank_body(body, server.settings.max_request_rows)
        state, ranking = await server.call(
            lambda state: rank_samples(state.model, samples, server.settings.max_batch_size, reuse), "ranking")
        records = ranking.records()
        server.metrics.observe_rows(records, state.registry.entries)
        return {"generation": state.generation, "core_fingerprint": state.core_fingerprint,
                "ranking": ranking.summary(), "candidates": records[:top]}
