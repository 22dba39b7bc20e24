"""The HTTP API of `unictr serve` (FastAPI on uvicorn).

==========================  ================================================================
``POST /v1/predict``        ``{"samples": [...], "domain": optional}`` -> one prediction per row
``GET /v1/domains``         the registry being served (as `unictr domain list --json`) + reload state
``GET /healthz``            200 while the process runs
``GET /readyz``             200 once a core is loaded, else 503
``POST /v1/rank``           ``{"user": {...}, "candidates": [...]}`` -> candidates best first (:mod:`.ranking`)
``GET /metrics``            Prometheus text format
``/v2/...``                 the Open Inference Protocol (KServe V2), a domain per model (:mod:`.open_inference`)
==========================  ================================================================

Errors are JSON ``{"error": "<one line>"}`` with a 4xx/5xx status, never a traceback. With an API
key, ``/v1/*``, ``/v2``, ``/v2/models/*``, ``/metrics`` and the API docs (``/docs``, ``/redoc``,
``/openapi.json``) need ``Authorization: Bearer <key>``; the probes (``/healthz``, ``/readyz``,
``/v2/health/*``) stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from unictr_core.config import ServeSettings  # noqa: F401 - re-exported (its home is unictr_core.config)
from unictr_core.modeling.fast_path import describe
from unictr_core.modeling.predict import Predictions, prediction_records
from unictr_core.serving import open_inference, ranking
from unictr_core.serving.batcher import DynamicBatcher
from unictr_core.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from unictr_core.serving.requests import RequestError, parse_predict_body
from unictr_core.serving.state import LiveRegistry, ServingState

log = logging.getLogger("unictr.serve")
# with an API key, these need it; the probes (/healthz, /readyz, /v2/health/*) stay open
PROTECTED_PREFIXES = ("/v1/", "/metrics", "/v2/models", "/docs", "/redoc", "/openapi.json")
PROTECTED_PATHS = ("/v2",)  # the Open Inference Protocol's server metadata


def protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) or path.rstrip("/") in PROTECTED_PATHS


@dataclass(frozen=True)
class Server:
    """What the route modules (:mod:`.ranking`, :mod:`.open_inference`) use of a running server."""

    settings: ServeSettings
    metrics: ServerMetrics
    current_state: Callable[[], ServingState]  # the state a request runs on; 503 while none is loaded
    score: Callable  # async (samples) -> (state, Predictions), dynamically batched
    call: Callable  # async (function(state), what) -> (state, result), run on the prediction thread
    read_body: Callable  # async (request) -> bytes, at most --max-body-bytes


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body: {declared} bytes, more than the limit of {limit} (--max-body-bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body: more than the limit of {limit} bytes (--max-body-bytes)")
    return bytes(body)


def create_app(settings: ServeSettings):
    """The FastAPI application serving ``settings.home``; the registry watcher and batcher run during its lifespan."""
    settings.validate()
    metrics = ServerMetrics()

    def on_change(state: ServingState) -> None:
        metrics.observe_state(state.generation, [e.status for e in state.registry.entries.values()],
                              len(state.notes))
        metrics.observe_model(describe(state.model))

    live = LiveRegistry(settings.home, settings.poll_interval_s, on_change=on_change, precision=settings.precision,
                        quantize=settings.quantize)
    batcher = DynamicBatcher(settings.max_batch_size, settings.max_wait_ms, on_batch=metrics.batch_size.observe)
    app = FastAPI(title="UniCTR", description="Online click-through-rate prediction (Uni-CTR).",
                  lifespan=_lifespan(settings, live, batcher))
    _add_error_handling(app, settings, metrics)
    server = _server(settings, metrics, live, batcher)
    _add_prediction_routes(app, server)
    ranking.add_routes(app, server)
    open_inference.add_routes(app, server)
    _add_domain_routes(app, server, live)
    _add_probe_routes(app, metrics, live)
    return app


def _lifespan(settings: ServeSettings, live: LiveRegistry, batcher: DynamicBatcher):
    """The app's lifespan: the batcher and the registry watcher run while it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        live.start()
        log.info("serving %s (precision %s, quantize %s, max batch %d rows, max wait %.1f ms)", settings.home,
                 settings.precision, settings.quantize, settings.max_batch_size, settings.max_wait_ms)
        try:
            yield
        finally:
            live.stop()
            batcher.stop()

    return lifespan


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _authorised(request, api_key: str) -> bool:
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())


def _path_label(app, request) -> str:
    """The route template that answered (e.g. /v2/models/{model}/infer), a static route's path when routing did
    not run (401), else (unmatched): bounded label values."""
    route = request.scope.get("route")
    if route is not None:
        return route.path
    path = request.url.path
    return path if path in {getattr(r, "path", None) for r in app.routes} else "(unmatched)"


def _add_error_handling(app, settings: ServeSettings, metrics: ServerMetrics) -> None:
    """Errors as one-line JSON, the API key checked, every request measured."""

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return _error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.middleware("http")
    async def measure_and_authorise(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if settings.api_key is not None and protected(path) and not _authorised(request, settings.api_key):
            response = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              {"WWW-Authenticate": "Bearer"})
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - one line to the client, the traceback to the log
                log.exception("unexpected error on %s", path)
                response = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        metrics.observe_request(_path_label(app, request), response.status_code, time.perf_counter() - started)
        return response


def _server(settings: ServeSettings, metrics: ServerMetrics, live: LiveRegistry, batcher: DynamicBatcher) -> Server:
    """The running server as the routes see it: the current state, and work handed to the prediction thread."""

    def current_state() -> ServingState:
        state = live.state
        if state is None:
            reason = live.last_error or "the core is still loading"
            raise RequestError(503, f"not ready: {reason}")
        return state

    async def finish(future, what: str):
        """The result of work handed to the prediction thread, or 504 after --request-timeout."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(504, f"{what} took longer than {settings.request_timeout_s:g} s "
                                    "(--request-timeout)") from None

    async def score(samples) -> tuple[ServingState, Predictions]:
        """Predictions of ``samples`` by the current state (dynamically batched with other requests' rows)."""
        state = current_state()  # this request finishes on this state, whatever reloads meanwhile
        predictions = await finish(batcher.submit(state, samples), "prediction")
        return state, predictions

    async def call(function, what: str):
        """``function(state)`` on the prediction thread, with the current state."""
        state = current_state()
        return state, await finish(batcher.submit_call(lambda: function(state)), what)

    return Server(settings, metrics, current_state, score, call,
                  lambda request: _read_body(request, settings.max_body_bytes))


def _add_prediction_routes(app, server: Server) -> None:
    """``POST /v1/predict``."""

    @app.post("/v1/predict")
    async def predict(request: Request):
        """Click probabilities; each row says whether its domain's DSN or the general network (zero-shot) answered."""
        body = await server.read_body(request)
        samples, _ = parse_predict_body(body, server.settings.max_request_rows)
        state, predictions = await server.score(samples)
        records = prediction_records(samples, predictions)
        for record in records:
            record["core_fingerprint"] = state.core_fingerprint
        server.metrics.observe_rows(records, state.registry.entries)
        return {"generation": state.generation, "core_fingerprint": state.core_fingerprint, "predictions": records}


def _add_domain_routes(app, server: Server, live: LiveRegistry) -> None:
    """``GET /v1/domains``."""

    @app.get("/v1/domains")
    async def domains():
        """The registry being served, as `unictr domain list --json` shows it, plus the reload state."""
        state = server.current_state()
        return {**state.registry.to_dict(), "serving": live.to_dict()}


def _add_probe_routes(app, metrics: ServerMetrics, live: LiveRegistry) -> None:
    """``GET /healthz``, ``/readyz`` and ``/metrics``."""

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        state = live.state
        if state is None:
            return JSONResponse({"ready": False, "reason": live.last_error or "the core is still loading"},
                                status_code=503)
        return {"ready": True, "generation": state.generation, "core_fingerprint": state.core_fingerprint}

    @app.get("/metrics")
    async def prometheus_metrics():
        metrics.reload_failures.set(live.reload_failures)
        metrics.ready.set(0 if live.state is None else 1)
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)


def serve(settings: ServeSettings) -> None:
    """Run the server until it is stopped (Ctrl-C / SIGTERM); requests in flight finish first."""
    import torch
    import uvicorn

    settings.validate()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        log.addHandler(handler)
    log.setLevel(settings.log_level.upper())
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level, workers=1, timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
