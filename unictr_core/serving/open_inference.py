"""The Open Inference Protocol (KServe V2, REST) beside ``/v1``: each registered domain is a model.

==============================================  =====================================================
``GET /v2``                                     server metadata: name, version, extensions (none)
``GET /v2/health/live``                         200 while the process runs
``GET /v2/health/ready``                        200 once a core is loaded, else 503
``GET /v2/models/{domain}``                     model metadata: its input and output tensors
``GET /v2/models/{domain}/ready``               200 when the domain is registered and a core loaded
``POST /v2/models/{domain}/infer``              inference
==============================================  =====================================================

Every model path also takes ``/versions/{version}`` after the name; the one version served is the core's
fingerprint (its first 12 characters), as the metadata lists it.

Inference request: one input tensor ``samples``, datatype ``BYTES``, shape ``[N]`` (or ``[N, 1]``), whose
elements are sample rows as JSON text (the fields of a `unictr predict` row; ``domain`` may be left out: it
is the model's name, and a different one is refused)::

    {"id": "r1", "inputs": [{"name": "samples", "shape": [1], "datatype": "BYTES",
                             "data": ["{\\"user_id\\": \\"u1\\", \\"item_id\\": \\"i9\\", \\"title\\": \\"Space saga\\"}"]}]}

Response: ``probability`` (FP32, shape ``[N]``: the DSN's, or the general network's for a domain without
one) and ``predicted_by`` (BYTES, shape ``[N]``: ``dsn`` or ``general (zero-shot)``); ``outputs`` in the
request may ask for one of them. Errors are ``{"error": "<one line>"}`` with a 4xx/5xx status, as the
protocol has them. The binary tensor data extension is not supported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from unictr_core import __version__
from unictr_core.data.data_io import sample_from_mapping
from unictr_core.data.schema import DataError, Sample
from unictr_core.modeling.fast_path import describe
from unictr_core.modeling.predict import DSN_LABEL, ZERO_SHOT_LABEL, prediction_records
from unictr_core.serving.requests import RequestError

SERVER_NAME = "unictr"
PLATFORM = "unictr"
INPUT = "samples"
OUTPUTS = {"probability": "FP32", "predicted_by": "BYTES"}
SOURCE = "inference request"
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
TENSOR_FIELDS = ("name", "shape", "datatype", "parameters", "data")
BINARY_HEADER = "inference-header-content-length"


@dataclass
class InferRequest:
    samples: list[Sample]
    request_id: Optional[str]
    outputs: list[str]  # the output tensors to return, in the order asked


def model_version(state) -> str:
    return state.core_fingerprint[:12]


# --------------------------------------------------------------------------- parsing
def parse_infer_request(body: bytes, model: str, max_rows: int) -> InferRequest:
    """The samples, id and requested outputs of an inference request for ``model`` (a domain)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"{SOURCE}: not valid UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"{SOURCE}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    if not isinstance(data, dict):
        raise RequestError(400, f"{SOURCE}: expected a JSON object with 'inputs', got {type(data).__name__}")
    _no_unknown(data, REQUEST_FIELDS, SOURCE)
    request_id = data.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, f"{SOURCE}, field 'id': expected a string, got {type(request_id).__name__}")
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, f"{SOURCE}, field 'inputs': expected a non-empty list of input tensors")
    names = [tensor.get("name") if isinstance(tensor, dict) else None for tensor in inputs]
    if names != [INPUT]:
        raise RequestError(400, f"{SOURCE}, field 'inputs': this model takes one input tensor, '{INPUT}' (BYTES, "
                                f"sample rows as JSON text), got {names}")
    rows = _bytes_elements(inputs[0], max_rows)
    samples = [_sample(row, model, number) for number, row in enumerate(rows, start=1)]
    return InferRequest(samples, request_id, _requested_outputs(data.get("outputs")))


def _no_unknown(data: dict, allowed: tuple, where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RequestError(400, f"{where}, field '{unknown[0]}': unknown field (expected {', '.join(allowed)})")


def _bytes_elements(tensor: dict, max_rows: int) -> list:
    """The elements of the ``samples`` tensor, checked against its datatype and shape."""
    where = f"{SOURCE}, input '{INPUT}'"
    _no_unknown(tensor, TENSOR_FIELDS, where)
    if tensor.get("datatype") != "BYTES":
        raise RequestError(400, f"{where}: datatype must be BYTES (sample rows as JSON text), got "
                                f"{tensor.get('datatype')!r}")
    shape, data = tensor.get("shape"), tensor.get("data")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(isinstance(d, int) for d in shape)
            or (len(shape) == 2 and shape[1] != 1)):
        raise RequestError(400, f"{where}: shape must be [N] or [N, 1], got {shape!r}")
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: 'data' must be a list of N sample rows (JSON text)")
    flat = [x for element in data for x in (element if isinstance(element, list) else [element])]
    if len(flat) != shape[0]:
        raise RequestError(400, f"{where}: shape {shape} says {shape[0]} rows, 'data' holds {len(flat)}")
    if not flat:
        raise RequestError(400, f"{where}: no rows")
    if len(flat) > max_rows:
        raise RequestError(413, f"{where}: {len(flat)} rows, more than the limit of {max_rows} per request "
                                "(--max-request-rows); split the request")
    return flat


def _sample(element, model: str, number: int) -> Sample:
    """One row: JSON text (or, leniently, a JSON object) with the fields of a sample; its domain is ``model``."""
    where = f"{SOURCE}, input '{INPUT}', row {number}"
    row = element
    if isinstance(element, str):
        try:
            row = json.loads(element)
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"{where}: not a JSON object ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise RequestError(400, f"{where}: expected a sample as a JSON object, got {type(row).__name__}")
    domain = row.setdefault("domain", model)
    if domain != model:
        raise RequestError(400, f"{where}, field 'domain': '{domain}' is not this model's domain '{model}' "
                                "(leave it out, or send the row to /v2/models/<its domain>/infer)")
    try:
        return sample_from_mapping(row, where)
    except DataError as exc:
        raise RequestError(400, str(exc)) from None


def _requested_outputs(outputs) -> list[str]:
    if outputs is None:
        return list(OUTPUTS)
    names = [o.get("name") if isinstance(o, dict) else None for o in outputs] if isinstance(outputs, list) else None
    if not names or any(name not in OUTPUTS for name in names):
        raise RequestError(400, f"{SOURCE}, field 'outputs': expected a list of {{\"name\": ...}} naming "
                                f"{' or '.join(OUTPUTS)}, got {outputs!r}")
    return names


# --------------------------------------------------------------------------- answers
def infer_response(model: str, state, request: InferRequest, predictions) -> dict:
    probabilities = [float(np.float32(p)) for p in predictions.probs]
    answered_by = [ZERO_SHOT_LABEL if zero else DSN_LABEL for zero in predictions.zero_shot]
    data = {"probability": probabilities, "predicted_by": answered_by}
    response = {"model_name": model, "model_version": model_version(state)}
    if request.request_id is not None:
        response["id"] = request.request_id
    response["parameters"] = {"generation": state.generation, "core_fingerprint": state.core_fingerprint}
    response["outputs"] = [{"name": name, "datatype": OUTPUTS[name], "shape": [len(data[name])], "data": data[name]}
                           for name in request.outputs]
    return response


def model_metadata(model: str, state) -> dict:
    entry = state.registry.get(model)
    return {"name": model, "versions": [model_version(state)], "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1],
                        "parameters": {"content_type": "json",
                                       "description": "sample rows as JSON text (user_id, item_id, title, "
                                                      "history, ...; domain optional)"}}],
            "outputs": [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in OUTPUTS.items()],
            "parameters": {"predicted_by": DSN_LABEL if model in state.model.dsns else ZERO_SHOT_LABEL,
                           "description": entry.description or "", "source": entry.source,
                           "generation": state.generation, "core_fingerprint": state.core_fingerprint,
                           **describe(state.model)}}


def served_model(server, model: str, version: Optional[str]):
    """The current state, once ``model`` (and ``version``) is known: 404 otherwise, 503 before a core loads."""
    state = server.current_state()
    if state.registry.get(model) is None:
        known = ", ".join(sorted(state.registry.entries)) or "none"
        raise RequestError(404, f"model '{model}' is not a registered domain (models: {known})")
    if version is not None and version != model_version(state):
        raise RequestError(404, f"model '{model}' has no version '{version}' (serving {model_version(state)})")
    return state


# --------------------------------------------------------------------------- routes
def add_routes(app, server) -> None:
    """The V2 endpoints on ``app`` (``server``: :class:`unictr_core.serving.app.Server`)."""

    @app.get("/v2")
    async def server_metadata():
        """Open Inference Protocol: server metadata."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    async def live():
        """Open Inference Protocol: 200 while the server runs."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        """Open Inference Protocol: 200 once a core is loaded, else 503."""
        try:
            server.current_state()
        except RequestError as exc:
            return JSONResponse({"ready": False, "error": exc.message}, status_code=exc.status)
        return {"ready": True}

    async def metadata(model: str, version: Optional[str] = None):
        """Open Inference Protocol: a domain's model metadata (inputs, outputs, what answers it)."""
        return model_metadata(model, served_model(server, model, version))

    async def model_ready(model: str, version: Optional[str] = None):
        """Open Inference Protocol: 200 when the domain is registered and a core is loaded."""
        served_model(server, model, version)
        return {"name": model, "ready": True}

    async def infer(model: str, request: Request, version: Optional[str] = None):
        """Open Inference Protocol: click probabilities of sample rows of this domain."""
        if BINARY_HEADER in request.headers:
            raise RequestError(400, "the binary tensor data extension is not supported: send JSON tensors")
        served_model(server, model, version)
        body = await server.read_body(request)
        parsed = parse_infer_request(body, model, server.settings.max_request_rows)
        state, predictions = await server.score(parsed.samples)
        server.metrics.observe_rows(prediction_records(parsed.samples, predictions), state.registry.entries)
        return infer_response(model, state, parsed, predictions)

    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.get(base)(metadata)
        app.get(f"{base}/ready")(model_ready)
        app.post(f"{base}/infer")(infer)
