"""Options and error handling shared by the ``unictr`` commands (imports neither torch nor transformers)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional

import typer

from unictr_core.config import MAX_ID_HISTORY, MAX_ID_LR_SCALE, ModelConfig, TrainConfig
from unictr_core.data.schema import DataError
from unictr_core.store.layout import ArtifactError, default_home
from unictr_core.store.snapshots import HomeStoreError

HOME_HELP = "UniCTR home: holds core/ (the frozen core) and domains/ (domain bundles). Default: $UNICTR_HOME or ./unictr-home."

# BackboneError (unictr_core.modeling.backbone) is a ValueError; OSError: a full disk, a refused permission, ...
# anywhere (its message names the path: "[Errno 28] No space left on device: '<path>'")
USER_ERRORS = (DataError, ArtifactError, HomeStoreError, ValueError, OSError)


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


def threads_option():
    return typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice). On a shared "
                        "machine, 1 avoids oversubscription.")


def id_history_option(flag: str = "--id-history"):
    return typer.Option(ModelConfig.id_history, flag, min=0, max=MAX_ID_HISTORY, metavar="K", help=(
        "With ID embeddings (--ids dsn|all): they also read the user's last K history items (hashed titles, "
        "mean-pooled, as the ID baselines' history slot); 0: none (default)."))


def id_fields_option(flag: str = "--id-fields"):
    return typer.Option("", flag, metavar="FIELDS", help=(
        "With ID embeddings (--ids dsn|all): the categorical fields beside user and item, each embedded on its "
        "own as the ID baselines do (comma-separated names: brand, price or extra fields), or 'auto' (brand and "
        "the training split's categorical extra fields, stored by name in the core). Default: one mean-pooled bag "
        "of all of them."))


def id_lr_scale_option(flag: str = "--id-lr-scale"):
    return typer.Option(TrainConfig.id_lr_scale, flag, max=MAX_ID_LR_SCALE, metavar="X", help=(
        "With ID embeddings (--ids dsn|all): their tables learn at X times the heads' learning rate (base and "
        "peak; sparse rows see few updates each). 1: one rate for all the heads (default)."))


def dsn_shrinkage_option(flag: str = "dsn-shrinkage"):
    return typer.Option(TrainConfig.dsn_shrinkage, f"--{flag}/--no-{flag}", help=(
        "After training, scale each residual DSN's correction to the general network by the s in 0, 0.1, ..., 1 "
        "with the lowest logloss on its domain's validation rows (0: the domain predicts as the general network; "
        "default). --no-" + flag + " keeps the DSNs as trained."))


def set_threads(threads: Optional[int]) -> None:
    """Apply ``--threads`` (nothing when not given)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def epoch_line(record: dict) -> str:
    """One line per training epoch: train loss, validation AUC and logloss, time."""
    def num(key: str) -> str:
        value = record.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    return (f"epoch {record['epoch']}: train loss {num('train_loss')}, valid AUC {num('valid_auc')}, "
            f"valid logloss {num('valid_logloss')}, {record.get('seconds', 0.0):.1f} s")


def print_epoch(record: dict) -> None:
    """Print an epoch's line above the progress bars (the ``on_epoch`` of ``train`` and ``domain add``)."""
    from tqdm.auto import tqdm

    tqdm.write(epoch_line(record))


def warn(messages) -> None:
    """Print each message as a warning line on stderr."""
    for message in messages:
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def split_csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def echo_field_usage(usage) -> None:
    """Print which sample fields the prompt templates render and which they ignore, per group of domains
    (``usage``: :func:`unictr_core.data.prompts.field_usage`)."""
    for domains, used, ignored in usage:
        typer.echo(f"prompt fields ({', '.join(domains)}): uses {', '.join(used) or 'none'}; "
                   f"ignores {', '.join(ignored) or 'none'}")
