"""``unictr data prepare``: build dataset folders from raw public data files.

The lead mounts :data:`prepare_app` as ``unictr data prepare``; every command
writes a dataset folder (``train/valid/test.jsonl`` + ``dataset.yaml``) and
prints a per-domain summary table. Bad or missing raw files end with one
``error: <file>, line N, field 'x': ...`` line and exit code 1 (``UNICTR_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unictr_core.adapters import PrepareReport

from .common import fail, user_errors

DEFAULT_DATA = Path("..") / "shared" / "data"

prepare_app = typer.Typer(
    name="prepare",
    help="Turn raw public data files into UniCTR dataset folders (time split per domain, leak-free histories).",
    no_args_is_help=True,
    add_completion=False,
)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> ``(0.8, 0.1, 0.1)``; anything else is a usage error."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected three comma-separated numbers like 0.8,0.1,0.1, got {text!r}")
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise typer.BadParameter(f"expected three non-negative numbers summing to 1 (train,valid,test), got {text!r}")
    return values  # type: ignore[return-value]


def _split_list(values: Optional[List[str]]) -> Optional[list[str]]:
    """Repeated and/or comma-separated option values as one list (``None`` when not given)."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _check_raw(raw: Path) -> None:
    if not raw.is_dir():
        fail(f"raw data folder not found: {raw} (resolved from {Path.cwd()}: {raw.resolve()}); "
             "give the folder with --raw DIR")


def _print(report: PrepareReport) -> None:
    typer.echo(report.table())
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {report.out_dir}")


@prepare_app.command("amazon2018")
@user_errors
def amazon2018(
    raw: Path = typer.Option(DEFAULT_DATA / "amazon2018", "--raw", help="Folder with <Category>_5.json.gz review "
                             "files (2014 release: reviews_<Category>_5.json.gz) and optional "
                             "meta_<Category>.json.gz metadata files (JSON lines, or the 2014 Python-literal lines)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (created or replaced)."),
    categories: Optional[List[str]] = typer.Option(None, "--categories", "-c", help="Categories to include, by raw "
                                                   "name (Gift_Cards) or domain name (gift_cards); repeat or "
                                                   "comma-separate. Default: every review file in --raw."),
    history_k: int = typer.Option(5, "--history-k", min=0, help="Earlier positive items kept in each history."),
    read_rows: Optional[int] = typer.Option(None, "--read-rows", min=1, help="Read only the first N rows of each "
                                            "raw review file (quick runs)."),
    fractions: str = typer.Option("0.8,0.1,0.1", "--fractions", help="train,valid,test shares of the time split."),
    holdout: Optional[List[str]] = typer.Option(None, "--holdout", help="Holdout (zero-shot) domains; "
                                                "default all_beauty when present."),
    seed: int = typer.Option(0, "--seed", help="Recorded in dataset.yaml."),
) -> None:
    """Amazon Review Data 2018 (or 2014): one domain per category, label = overall > 3.

    Drops duplicate (user, item, time) rows. Item text comes from the metadata file where one exists
    (HTML cleaned; a missing or junk title falls back to the description's first sentence, the last
    category level, then the brand; counts in dataset.yaml) plus the review's 'style' attributes.
    dataset.yaml carries a prompt template that renders every field (see `unictr prompts`).
    """
    from unictr_core.adapters.amazon2018 import prepare_amazon2018

    shares = parse_fractions(fractions)
    _check_raw(raw)
    _print(prepare_amazon2018(raw, out, categories=_split_list(categories), history_k=history_k,
                              fractions=shares, max_rows=read_rows, seed=seed, holdout_domains=_split_list(holdout)))


@prepare_app.command("movielens")
@user_errors
def movielens(
    raw: Path = typer.Option(DEFAULT_DATA / "ml-100k", "--raw", help="Folder with ml-100k.inter, ml-100k.item, "
                             "ml-100k.user (RecBole atomic files)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (created or replaced)."),
    domain_by: str = typer.Option("genre", "--domain-by", help="genre (movie's first listed genre), age (user age "
                                  "band) or occupation."),
    history_k: int = typer.Option(5, "--history-k", min=0, help="Earlier positive movies kept in each history."),
    read_rows: Optional[int] = typer.Option(None, "--read-rows", min=1, help="Read only the first N rows of the "
                                            "raw ratings file (quick runs)."),
    min_domain_rows: int = typer.Option(500, "--min-domain-rows", min=0,
                                        help="Domains with fewer rows are merged into 'other'."),
    fractions: str = typer.Option("0.8,0.1,0.1", "--fractions", help="train,valid,test shares of the time split."),
    holdout: Optional[List[str]] = typer.Option(None, "--holdout", help="Holdout (zero-shot) domains; default "
                                                "horror / age_56_plus / healthcare by --domain-by."),
) -> None:
    """MovieLens 100K: label = rating > 3; domains by genre, age band or occupation."""
    from unictr_core.adapters.movielens import DOMAIN_CHOICES, prepare_movielens

    if domain_by not in DOMAIN_CHOICES:
        raise typer.BadParameter(f"expected one of {', '.join(DOMAIN_CHOICES)}, got {domain_by!r}",
                                 param_hint="--domain-by")
    shares = parse_fractions(fractions)
    _check_raw(raw)
    _print(prepare_movielens(raw, out, domain_by=domain_by, history_k=history_k, fractions=shares,
                             max_rows=read_rows, min_domain_rows=min_domain_rows,
                             holdout_domains=_split_list(holdout)))
