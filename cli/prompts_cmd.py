"""``unictr prompts``: print the prompts the model reads, with token counts and a p50/p95 summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unictr_cli.common import echo_field_usage, home_option, resolve_home, user_errors
from unictr_core.config import ModelConfig
from unictr_core.prompt_preview import DEFAULT_LIMIT, preview_prompts


@user_errors
def prompts(
    data: Path = typer.Option(..., "--data", help="A .jsonl/.csv file, or a dataset folder (its --split file)."),
    domain: Optional[str] = typer.Option(None, help="Only rows of this domain."),
    limit: int = typer.Option(DEFAULT_LIMIT, min=0, help="How many prompts to print (the first N rows); the "
                              "token-length summary always covers every row."),
    split: str = typer.Option("train", help="Which split of a dataset folder: train, valid or test."),
    home: Optional[Path] = home_option(),
    backbone: str = typer.Option(ModelConfig.backbone, help="Tokenizer to count with when the home has no trained core "
                                 "(with a core: the core's own tokenizer)."),
    max_length: int = typer.Option(ModelConfig.max_length, min=8, help="Prompt length limit when the home has no trained core "
                                   "(with a core: the core's own)."),
) -> None:
    """Print the rendered prompts exactly as training and prediction render them, each with its token count.

    With a trained core in the home, templates, tokenizer and length limit are the core's (as `unictr predict`
    uses them); without one, the templates `unictr train --data DATA` would use (the domain registry's, else the
    dataset's own template in dataset.yaml, else the built-in default).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"--split must be train, valid or test, got {split!r}")
    preview = preview_prompts(data, resolve_home(home), domain, limit, split, backbone, max_length)
    typer.echo(f"templates: {preview.source}")
    echo_field_usage(preview.field_usage)
    for row in preview.shown:
        cut = (f", {row.kept_tokens} after dropping the oldest history to fit {preview.max_length}"
               if row.kept_tokens < row.tokens else "")
        typer.echo(f"\n[{row.sample.domain}] {row.tokens} tokens{cut}\n{row.text}")
    typer.echo(f"\n{preview.rows} prompts: p50 {preview.p50:.0f} tokens, p95 {preview.p95:.0f}, longest "
               f"{preview.longest}; {preview.over_max_length} over max_length {preview.max_length}")
