"""``unictr serve``: the online prediction server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from unictr_cli import speed_options as speed
from unictr_cli.common import home_option, resolve_home, user_errors
from unictr_core.config import ServeSettings


def _api_key(env_name: Optional[str]) -> Optional[str]:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise ValueError(f"--api-key-env {env_name}: the environment variable {env_name} is not set or empty")
    return key


@user_errors
def serve(
    home: Optional[Path] = home_option(),
    host: str = typer.Option(ServeSettings.host, help="Address to bind. 127.0.0.1 serves this machine only; 0.0.0.0 "
                             "every interface (put it behind a proxy with TLS, and use --api-key-env)."),
    port: int = typer.Option(ServeSettings.port, min=0, max=65535, help="TCP port."),
    max_batch_size: int = typer.Option(ServeSettings.max_batch_size, min=1, help="Dynamic batching: most rows per backbone batch (the rows "
                                       "of concurrent requests are merged up to this)."),
    max_wait_ms: float = typer.Option(ServeSettings.max_wait_ms, min=0.0, help="Dynamic batching: how long the first waiting request "
                                      "may wait for others to join its batch, in milliseconds."),
    max_body_bytes: int = typer.Option(ServeSettings.max_body_bytes, min=1024, help="Largest request body (bytes); larger: 413."),
    max_request_rows: int = typer.Option(ServeSettings.max_request_rows, min=1,
                                         help="Most samples in one request; more: 413."),
    request_timeout: float = typer.Option(ServeSettings.request_timeout_s, min=0.001, help="Seconds a prediction may take before the "
                                          "request is answered 504."),
    poll_interval: float = typer.Option(ServeSettings.poll_interval_s, min=0.01, help="Seconds between checks of the home for commits "
                                        "(`domain add/remove`, `train`), which are then loaded without a restart."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of an environment variable holding "
                                              "an API key: /v1/*, /v2/models/*, /metrics and the API docs (/docs, "
                                              "/redoc, /openapi.json) then need 'Authorization: Bearer <key>' "
                                              "(/healthz, /readyz and /v2/health/* stay open)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's choice)."),
    log_level: str = typer.Option(ServeSettings.log_level, help="Log level: critical, error, warning, info, debug."),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, POST /v1/rank, GET /v1/domains, /healthz, /readyz, /metrics,
    and the Open Inference Protocol (KServe V2) under /v2: each domain is a model.

    The model is prepared once as `unictr predict` prepares it: LoRA merged into the backbone's weights, the
    weights in --precision (or int8 with --quantize int8).

    Domains added, replaced or removed (and a re-trained core) by other processes are picked up live.

    Requests in flight finish on the state they started with.

    Needs the optional extra 'serve' (FastAPI, uvicorn, prometheus-client); scripts/install.sh installs it.
    """
    try:
        from unictr_core.serving.app import serve as run
    except ImportError as exc:
        raise ValueError(f"`unictr serve` needs the extra 'serve' ({exc.name} is missing): "
                         "pip install 'unictr[serve]' or scripts/install.sh") from None
    settings = ServeSettings(home=resolve_home(home), host=host, port=port, max_batch_size=max_batch_size,
                             max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes,
                             max_request_rows=max_request_rows,
                             request_timeout_s=request_timeout, poll_interval_s=poll_interval,
                             api_key=_api_key(api_key_env), threads=threads, log_level=log_level,
                             precision=precision, quantize=quantize)
    settings.validate()
    typer.echo(f"serving {settings.home} on http://{host}:{port} (precision {precision}, quantize {quantize}; "
               "Ctrl-C to stop)")
    run(settings)
