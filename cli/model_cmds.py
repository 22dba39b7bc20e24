"""``unictr train``, ``unictr evaluate`` and ``unictr predict``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

import typer
from tqdm.auto import tqdm

from unictr_cli.common import home_option, resolve_home, split_csv, user_errors
from unictr_core.artifact import load_home, save_trained
from unictr_core.config import LADDER_KINDS, ModelConfig, TrainConfig
from unictr_core.data_io import read_samples, write_samples
from unictr_core.dataset import load_dataset
from unictr_core.domain_defs import templates_for
from unictr_core.predict import predict_samples
from unictr_core.report import evaluation_report, evaluation_table, format_table, write_json


def subsample(samples, max_rows: Optional[int], seed: int):
    """At most ``max_rows`` samples per domain, chosen with ``seed``, original order kept."""
    if max_rows is None:
        return samples
    by_domain: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_domain.setdefault(s.domain, []).append(i)
    keep = set()
    rng = random.Random(seed)
    for rows in by_domain.values():
        keep.update(rows if len(rows) <= max_rows else rng.sample(rows, max_rows))
    return [s for i, s in enumerate(samples) if i in keep]


@user_errors
def train(
    data: Path = typer.Option(..., "--data", help="Dataset folder (train.jsonl, valid.jsonl, test.jsonl, dataset.yaml), "
                              "e.g. from `unictr data generate` or `unictr data prepare`."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains to train on. "
                                          "Default: every domain except the dataset's holdout domains."),
    backbone: str = typer.Option("minilm", help="Backbone: a registered name (see `unictr backbones`) or a local "
                                 "Hugging Face model directory."),
    home: Optional[Path] = home_option(),
    epochs: int = typer.Option(3, min=1, help="Maximum number of epochs."),
    batch_size: int = typer.Option(32, min=1),
    max_length: int = typer.Option(128, min=8, help="Maximum prompt length in tokens (oldest history dropped first)."),
    ladder: str = typer.Option("transformer", help=f"Ladder block kind: {', '.join(LADDER_KINDS)}."),
    ladder_freq: Optional[int] = typer.Option(None, min=1, help="One ladder block every N backbone layers "
                                              "(default: about 4 blocks)."),
    lora_r: int = typer.Option(8, min=1), lora_alpha: int = typer.Option(32, min=1),
    tower: str = typer.Option("512,256,128", help="Tower MLP widths."),
    dropout: float = typer.Option(0.3, min=0.0, max=0.99),
    patience: int = typer.Option(2, min=1, help="Stop after this many epochs without a better validation AUC."),
    seed: int = typer.Option(0),
    max_rows: Optional[int] = typer.Option(None, min=1, help="Subsample at most N training rows per domain."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after N optimiser steps (smoke runs)."),
) -> None:
    """Train the core (LoRA + general network) and one DSN per domain, jointly; write them to the home."""
    dataset = load_dataset(data)
    chosen = split_csv(domains)
    if chosen is None:
        holdout = set(dataset.meta.get("holdout_domains") or [])
        chosen = sorted({s.domain for s in dataset.train} - holdout)
    missing = sorted(set(chosen) - {s.domain for s in dataset.train})
    if missing:
        raise ValueError(f"--domains: no training rows for {', '.join(missing)} in {data / 'train.jsonl'}")
    model_config = ModelConfig(backbone=backbone, max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                               ladder_kind=ladder, ladder_freq=ladder_freq,
                               tower_dims=[int(x) for x in split_csv(tower) or []], dropout=dropout)
    model_config.validate()
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, domains=chosen,
                               max_steps=max_steps)
    train_rows = subsample(dataset.train, max_rows, seed)
    typer.echo(f"training on {', '.join(chosen)} with backbone '{backbone}' "
               f"({sum(s.domain in chosen for s in train_rows)} training rows)")
    from unictr_core.training import train_unictr

    result = train_unictr(train_rows, dataset.valid, model_config, train_config, templates=templates_for(chosen))
    home_dir = resolve_home(home)
    training = {"dataset": str(data), "domains": chosen, "best_epoch": result.best_epoch,
                "valid_auc": result.best_valid_auc, "seconds": round(result.seconds, 1),
                "config": train_config.to_dict()}
    fingerprint = save_trained(result.model, home_dir, training, result.valid_metrics)
    rows = [[d, m["rows"], m["auc"], m["logloss"], m["general_auc"]] for d, m in result.valid_metrics.items()]
    typer.echo(format_table(["domain", "valid rows", "AUC (DSN)", "logloss", "AUC (general)"], rows))
    typer.echo(f"best epoch {result.best_epoch}, {result.seconds:.0f} s; core {fingerprint[:12]} and "
               f"{len(chosen)} domain bundles written to {home_dir}")


def _load_split(data: Path, split: str):
    if data.is_dir():
        return read_samples(data / f"{split}.jsonl", require_labels=True)
    return read_samples(data, require_labels=True)


@user_errors
def evaluate(
    data: Path = typer.Option(..., "--data", help="A dataset folder (its --split file is used) or a .jsonl/.csv file."),
    split: str = typer.Option("test", help="Which split of a dataset folder: train, valid or test."),
    home: Optional[Path] = home_option(),
    reference: str = typer.Option("general", help="RelaImpr reference: 'general' (the general network) or the "
                                  "path of an earlier `unictr evaluate --out` JSON report."),
    out: Optional[Path] = typer.Option(None, help="Write the report as JSON here."),
    batch_size: int = typer.Option(64, min=1),
) -> None:
    """Per-domain AUC and logloss, overall AUC and RelaImpr; domains without a DSN are scored zero-shot."""
    samples = _load_split(data, split)
    reference_report = None
    if reference != "general":
        reference_report = json.loads(Path(reference).read_text(encoding="utf-8"))
    model, notes = load_home(resolve_home(home))
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    with tqdm(total=len(samples), desc="evaluating", unit="sample") as bar:
        predictions = predict_samples(model, samples, batch_size, progress=bar)
    report = evaluation_report(samples, predictions, reference if reference == "general" else Path(reference).stem,
                               reference_report)
    typer.echo(evaluation_table(report))
    if out is not None:
        write_json(out, report)
        typer.echo(f"report written to {out}")


@user_errors
def predict(
    input: Path = typer.Option(..., "--input", help="Samples to score (.jsonl or .csv; labels not needed)."),
    domain: Optional[str] = typer.Option(None, help="Score every row as this domain (overrides the rows' domain)."),
    home: Optional[Path] = home_option(),
    out: Optional[Path] = typer.Option(None, help="Write predictions as JSONL here (default: print them)."),
    batch_size: int = typer.Option(64, min=1),
) -> None:
    """Click probabilities per sample: the domain's DSN, or the general network (zero-shot) for a domain without one."""
    samples = read_samples(input)
    if domain is not None:
        from unictr_core.data_io import validate_domain_name

        validate_domain_name(domain, "--domain")
        for s in samples:
            s.domain = domain
    model, notes = load_home(resolve_home(home))
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    predictions = predict_samples(model, samples, batch_size)
    lines = []
    for s, p, zero in zip(samples, predictions.probs, predictions.zero_shot):
        lines.append(json.dumps({"domain": s.domain, "user_id": s.user_id, "item_id": s.item_id,
                                 "probability": round(float(p), 6),
                                 "predicted_by": "general (zero-shot)" if zero else "dsn"}))
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is None:
        typer.echo(text, nl=False)
    else:
        from unictr_core.data_io import atomic_write_text

        atomic_write_text(out, text)
    zero_domains = sorted({s.domain for s, z in zip(samples, predictions.zero_shot) if z})
    if zero_domains:
        typer.secho(f"zero-shot: no DSN for {', '.join(zero_domains)}; the general network answered for "
                    f"{int(predictions.zero_shot.sum())} of {len(samples)} rows", fg=typer.colors.YELLOW, err=True)
