"""Options and error handling shared by the ``unictr`` commands."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional

import typer

from unictr_core.artifact import ArtifactError, default_home
from unictr_core.backbone import BackboneError
from unictr_core.schema import DataError

HOME_HELP = "UniCTR home: holds core/ (the frozen core) and domains/ (domain bundles). Default: $UNICTR_HOME or ./unictr-home."

USER_ERRORS = (DataError, ArtifactError, BackboneError, ValueError, FileNotFoundError, FileExistsError)


def home_option() -> Path:
    return typer.Option(None, "--home", help=HOME_HELP, show_default=False)


def resolve_home(home: Optional[Path]) -> Path:
    return Path(home) if home is not None else default_home()


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def user_errors(func: Callable) -> Callable:
    """Report expected failures (bad data, missing artifact, bad settings) as one clear line, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            if os.environ.get("UNICTR_DEBUG"):
                raise
            fail(str(exc))

    return wrapper


def split_csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def echo_field_usage(usage) -> None:
    """Print which sample fields the prompt templates render and which they ignore, per group of domains
    (``usage``: :func:`unictr_core.prompts.field_usage`)."""
    for domains, used, ignored in usage:
        typer.echo(f"prompt fields ({', '.join(domains)}): uses {', '.join(used) or 'none'}; "
                   f"ignores {', '.join(ignored) or 'none'}")
