"""``unictr data generate``: write the built-in synthetic dataset folder.

The lead mounts :data:`data_app` as ``unictr data``. :func:`generate_command`
is the plain command function, for mounting on another Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from unictr_core.data.dataset import SPLITS
from unictr_core.data.schema import DataError
from unictr_core.data.tables import format_table

data_app = typer.Typer(
    name="data",
    help="Make dataset folders (train/valid/test.jsonl + dataset.yaml).",
    no_args_is_help=True,
    add_completion=False,
)


@data_app.callback()
def _data_group() -> None:
    """Make dataset folders (train/valid/test.jsonl + dataset.yaml)."""


def format_domain_table(meta: dict[str, Any]) -> str:
    """Rows per split, positive rate per split and holdout flag, one line per domain."""
    holdout = set(meta.get("holdout_domains") or [])
    header = ["domain"] + list(SPLITS) + [f"pos_{name}" for name in SPLITS] + ["holdout"]
    rows = []
    for domain, per_split in sorted((meta.get("domains") or {}).items()):
        rates = [per_split.get(name, {}).get("positive_rate") for name in SPLITS]
        rows.append([domain]
                    + [str(per_split.get(name, {}).get("rows", 0)) for name in SPLITS]
                    + ["-" if rate is None else f"{rate:.3f}" for rate in rates]
                    + ["yes" if domain in holdout else "no"])
    return format_table(header, rows, rule=False)


def generate_command(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write. Created if missing; an existing dataset "
                             "folder is replaced atomically; a non-empty folder that is not a dataset is refused."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; the same seed gives byte-identical files."),
    scale: float = typer.Option(1.0, "--scale", min=0.01, max=50.0,
                                help="Row-count multiplier (1.0: books 2000, movies 1000, music 350 and "
                                     "board_games 1000 rows, 500 of them in the six months after the other "
                                     "domains end; 4350 rows in all, about 200 users)."),
) -> None:
    """Write the built-in synthetic multi-domain dataset (books, movies, music; board_games held out).

    Eight hidden themes (space, cooking, sports, ...) run through all domains; each user likes one or two of them in every domain, and item titles and the histories of earlier clicked titles reveal them. Split 80/10/10 by time per domain (board_games 50/10/40).
    """
    from unictr_core.data.synthetic import write_builtin_dataset

    try:
        dataset = write_builtin_dataset(out, seed=seed, scale=scale)
    except (DataError, ValueError, FileExistsError, OSError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    typer.echo(format_domain_table(dataset.meta))
    typer.echo(f"wrote {out} (seed {seed}, scale {scale}, "
               f"{len(dataset.train) + len(dataset.valid) + len(dataset.test)} rows)")


data_app.command("generate")(generate_command)
