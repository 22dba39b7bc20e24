"""``unictr train``, ``unictr evaluate`` and ``unictr predict``: parse, call :mod:`unictr_core.workflows`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unictr_cli import speed_options as speed
from unictr_cli.common import (dsn_shrinkage_option, echo_field_usage, home_option, id_fields_option,
                               id_history_option, id_lr_scale_option, print_epoch, resolve_home, set_threads,
                               split_csv, threads_option, user_errors, warn)
from unictr_cli.launching import (dist_timeout_option, launch_options, nnodes_option, node_rank_option,
                                  nproc_option, process_group, rdzv_endpoint_option, rdzv_id_option,
                                  relaunch_under_torchrun)
from unictr_core.config import (DSN_KINDS, LADDER_KINDS, LR_SCHEDULES, ModelConfig, TrainConfig, joint_head_lr,
                                tune_layers_text)
from unictr_core.data.tables import format_table


@user_errors
def train(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Dataset folder (train.jsonl, valid.jsonl, test.jsonl, dataset.yaml), "
                              "e.g. from `unictr data generate` or `unictr data prepare`."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains to train on. "
                                          "Default: every domain except the dataset's holdout domains."),
    backbone: str = typer.Option(ModelConfig.backbone, help="Backbone: a registered name (see `unictr backbones`) or "
                                 "a local Hugging Face model directory."),
    home: Optional[Path] = home_option(),
    epochs: int = typer.Option(TrainConfig.epochs, min=1, help="Maximum number of epochs."),
    batch_size: int = typer.Option(TrainConfig.batch_size, min=1,
                                   help="Global batch size (split over the processes of a distributed run)."),
    max_length: int = typer.Option(ModelConfig.max_length, min=8,
                                   help="Maximum prompt length in tokens (oldest history dropped first)."),
    ladder: str = typer.Option(ModelConfig.ladder_kind, help=f"Ladder block kind: {', '.join(LADDER_KINDS)}."),
    ladder_freq: Optional[int] = typer.Option(None, min=1, help="One ladder block every N backbone layers "
                                              "(default: about 4 blocks)."),
    lora_r: int = typer.Option(ModelConfig.lora_r, min=1, help="LoRA rank r of the adapters in the tuned backbone "
                                "layers."),
    lora_alpha: int = typer.Option(ModelConfig.lora_alpha, min=1, help="LoRA alpha: the adapters' update is "
                                    "scaled by alpha / r."),
    lora_dropout: float = typer.Option(ModelConfig.lora_dropout, min=0.0, max=0.99, help="Dropout on the LoRA path."),
    tower: str = typer.Option(",".join(map(str, ModelConfig().tower_dims)), help="Tower MLP widths."),
    dropout: float = typer.Option(ModelConfig.dropout, min=0.0, max=0.99, help="Dropout in the ladder blocks and "
                                 "the towers of the general network and the DSNs."),
    dsn: str = typer.Option(TrainConfig.dsn, "--dsn", help=f"DSN kind ({', '.join(DSN_KINDS)}). residual: each "
                            "DSN's logit is the general network's plus a learned correction that starts at zero, "
                            "as `domain add` does, so a DSN starts as good as the general network. standalone: "
                            "the paper's DSN, its own prediction from scratch."),
    dsn_stats: bool = typer.Option(TrainConfig.dsn_stats, "--dsn-stats/--no-dsn-stats", help="Each DSN also reads "
                                   "its domain's count statistics: the user's and the item's past positive rate "
                                   "and count (causal in training; the training part's when predicting), as "
                                   "`domain add` does."),
    lr_schedule: str = typer.Option(TrainConfig.lr_schedule, "--lr-schedule", help=f"Learning-rate schedule "
                                    f"({', '.join(LR_SCHEDULES)}). cyclic: the paper's, from the base rate up to "
                                    "the peak and back in every epoch. cosine: from the peak down a half cosine "
                                    "to the base rate at the last epoch (as `domain add` trains a DSN)."),
    head_lr: float = typer.Option(TrainConfig.head_lr[1], "--head-lr", min=0.0, help="Peak learning rate of the "
                                  "general network and the DSNs (AdamW; the schedule goes between "
                                  f"min({TrainConfig.head_lr[0]:g}, peak) and it). LoRA keeps its own range "
                                  f"({TrainConfig.backbone_lr[0]:g}..{TrainConfig.backbone_lr[1]:g})."),
    patience: int = typer.Option(TrainConfig.patience, min=1,
                                 help="Stop after this many epochs without a better validation AUC."),
    ids: str = typer.Option(ModelConfig.ids, "--ids", help="ID-aware Uni-CTR: none (the paper's text-only model), "
                            "dsn (each DSN also reads learned, hashed embeddings of the user, the item and the "
                            "categorical fields; its tables live in its bundle) or all (the general network too; "
                            "its tables are part of the frozen core). Unseen IDs embed to zero."),
    id_buckets: int = typer.Option(ModelConfig.id_buckets, min=2, help="Hash buckets of the ID embedding tables."),
    id_history: int = id_history_option(),
    id_fields: str = id_fields_option(),
    id_lr_scale: float = id_lr_scale_option(),
    dsn_shrinkage: bool = dsn_shrinkage_option(),
    seed: int = typer.Option(TrainConfig.seed, help="Random seed: initialisation, batch order and the --max-rows "
                              "subsample; the same seed gives the same weights."),
    max_rows: Optional[int] = typer.Option(None, min=1, help="At most N training rows per domain (a seeded "
                                          "subsample)."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after N optimiser steps (smoke runs)."),
    replace: bool = typer.Option(False, "--replace", help="Train into a home that already has a core: replace "
                                 "the core. DSNs added for the old core (`domain add`) are orphaned: incompatible, "
                                 "answered zero-shot until added again. Without it such a home is refused."),
    tune_layers: str = speed.tune_layers_option(),
    token_summary: int = speed.token_summary_option(),
    precision: str = speed.precision_option(),
    fill_precision: str = speed.fill_precision_option(),
    max_cache_gb: float = speed.max_cache_gb_option(),
    cache_dir: Optional[Path] = speed.cache_dir_option(),
    cache_dtype: str = speed.cache_dtype_option(),
    nproc_per_node: Optional[int] = nproc_option(),
    nnodes: Optional[str] = nnodes_option(),
    node_rank: Optional[int] = node_rank_option(),
    rdzv_endpoint: Optional[str] = rdzv_endpoint_option(),
    rdzv_id: Optional[str] = rdzv_id_option(),
    dist_timeout: Optional[float] = dist_timeout_option(),
    threads: Optional[int] = threads_option(),
) -> None:
    """Train the core (LoRA + general network) and one DSN per domain, jointly; write them to the home.

    With --nproc-per-node N the command relaunches itself under torchrun; it also runs as it is under torchrun
    (`torchrun --nproc-per-node N -m unictr_cli.main train ...`). Only rank 0 writes the home and prints.
    """
    from unictr_core import workflows

    tuned = speed.parse_tune_layers(tune_layers)
    launch = launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)
    if launch is not None:
        relaunch_under_torchrun(ctx, launch)
    set_threads(threads)
    home_dir = resolve_home(home)
    with process_group(dist_timeout) as group:
        model_config = ModelConfig(backbone=backbone, max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                                   lora_dropout=lora_dropout, ladder_kind=ladder, ladder_freq=ladder_freq,
                                   tower_dims=[int(x) for x in split_csv(tower) or []], dropout=dropout, ids=ids,
                                   id_buckets=id_buckets, id_history=id_history,
                                   id_fields=split_csv(id_fields) or [], tune_layers=tuned,
                                   token_summary=token_summary)
        train_config = TrainConfig(epochs=epochs, batch_size=batch_size, head_lr=joint_head_lr(head_lr),
                                   patience=patience, seed=seed, id_lr_scale=id_lr_scale,
                                   max_steps=max_steps, dsn=dsn, dsn_stats=dsn_stats, lr_schedule=lr_schedule,
                                   dsn_shrinkage=dsn_shrinkage,
                                   precision=precision, fill_precision=fill_precision, max_cache_gb=max_cache_gb,
                                   cache_dtype=cache_dtype, cache_dir=None if cache_dir is None else str(cache_dir))
        plan = workflows.plan_training(data, home_dir, model_config, train_config, split_csv(domains), max_rows,
                                       group, replace=replace)
        if group.is_main:
            if plan.replacing is not None:
                warn([plan.replacing.message(home_dir, replacing=True)])
            processes = f", {group.world_size} processes ({group.backend})" if group.is_distributed else ""
            typer.echo(f"training on {', '.join(plan.domains)} with backbone '{backbone}' "
                       f"({plan.training_rows} training rows{processes}; {dsn} DSNs; "
                       f"IDs: {ids}; LoRA in {tune_layers_text(model_config.tune_layers)})")
            echo_field_usage(plan.field_usage())
        done = workflows.train_home(plan, group, on_epoch=print_epoch)
        if done is None:  # not rank 0
            return
        warn(done.notes)
        result = done.training
        rows = [[d, m["rows"], m["auc"], m["logloss"], m["general_auc"],
                 f"{m['dsn_shrinkage']:g}" if "dsn_shrinkage" in m else "-"] for d, m in result.valid_metrics.items()]
        typer.echo(format_table(["domain", "valid rows", "AUC (DSN)", "logloss", "AUC (general)", "DSN kept"], rows))
        typer.echo(f"best epoch {result.best_epoch}, {result.seconds:.0f} s ({result.precision}"
                   f"{cache_text(result.cache)}); core {done.fingerprint[:12]} and {len(plan.domains)} domain "
                   f"bundles written to {home_dir}")


def cache_text(cache: dict) -> str:
    """The hidden-state cache of a training run, for its summary line."""
    if not cache:
        return ""
    disk = f", {cache['disk_bytes'] / 2**30:.2f} GiB of it memory-mapped" if cache["disk_bytes"] else ""
    return (f"; hidden states of layers {','.join(map(str, cache['layers']))} cached once: {cache['rows']} rows, "
            f"{cache['bytes'] / 2**30:.2f} GiB {cache['storage']}{disk}, filled in {cache['precision']}, "
            f"{cache['seconds']:.0f} s")


def _load_split(data: Path, split: str):
    from unictr_core.data.data_io import read_samples

    if data.is_dir():
        return read_samples(data / f"{split}.jsonl", require_labels=True, require_rows=True)
    return read_samples(data, require_labels=True, require_rows=True)


@user_errors
def evaluate(
    data: Path = typer.Option(..., "--data", help="A dataset folder (its --split file is used) or a .jsonl/.csv file."),
    split: str = typer.Option("test", help="Which split of a dataset folder: train, valid or test."),
    home: Optional[Path] = home_option(),
    reference: str = typer.Option("general", help="RelaImpr reference: 'general' (the general network) or the "
                                  "path of an earlier `unictr evaluate --out` JSON report."),
    out: Optional[Path] = typer.Option(None, help="Write the report as JSON here."),
    batch_size: int = typer.Option(TrainConfig.eval_batch_size, min=1, help="Rows per model batch."),
    threads: Optional[int] = threads_option(),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Per-domain AUC and logloss, the mean of the per-domain AUCs, the pooled overall AUC, and RelaImpr (shown
    only where the reference AUC is above 0.5); domains without a DSN are scored zero-shot."""
    from tqdm.auto import tqdm

    from unictr_core import workflows
    from unictr_core.fit.report import evaluation_table, write_json

    set_threads(threads)
    samples = _load_split(data, split)
    with tqdm(total=len(samples), desc="evaluating", unit="sample") as bar:
        result = workflows.evaluate(resolve_home(home), samples, reference, batch_size, precision, quantize,
                                    progress=bar)
    warn(result.notes)
    typer.echo(evaluation_table(result.report))
    typer.echo(f"computed in {result.report['precision']}")
    if out is not None:
        write_json(out, result.report)
        typer.echo(f"report written to {out}")


@user_errors
def predict(
    input: Path = typer.Option(..., "--input", help="Samples to score (.jsonl or .csv; labels not needed)."),
    domain: Optional[str] = typer.Option(None, help="Score every row as this domain (overrides the rows' domain)."),
    home: Optional[Path] = home_option(),
    out: Optional[Path] = typer.Option(None, help="Write predictions as JSONL here (default: print them)."),
    batch_size: int = typer.Option(TrainConfig.eval_batch_size, min=1, help="Rows per model batch."),
    threads: Optional[int] = threads_option(),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Click probabilities per sample: the domain's DSN, or the general network (zero-shot) for a domain without one."""
    import json

    from unictr_core import workflows
    from unictr_core.data.data_io import atomic_write_text, read_samples

    set_threads(threads)
    samples = read_samples(input, require_rows=True)
    result = workflows.predict(resolve_home(home), samples, domain, batch_size, precision, quantize)
    warn(result.notes)
    lines = [json.dumps(record, allow_nan=False) for record in result.records]
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
    if result.zero_shot_domains:
        typer.secho(f"zero-shot: no DSN for {', '.join(result.zero_shot_domains)}; the general network answered "
                    f"for {int(result.predictions.zero_shot.sum())} of {len(samples)} rows",
                    fg=typer.colors.YELLOW, err=True)


def _json_argument(value: str, option: str):
    """Inline JSON (starting with '{' or '[') or the path of a JSON / JSONL file."""
    import json

    text = value if value.lstrip().startswith(("{", "[")) else None
    where = f"{option} (inline JSON)"
    if text is None:
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{option} {value}: no such file (give a file or inline JSON)")
        text, where = path.read_text(encoding="utf-8"), f"{option} {value}"
        if path.suffix == ".jsonl":
            return [_json_line(line, where, number) for number, line in enumerate(text.splitlines(), start=1)
                    if line.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _json_line(line: str, where: str, number: int):
    import json

    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}, line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from None


@user_errors
def rank(
    user: str = typer.Option(..., "--user", help="The user context: a JSON object (inline or a .json file) with "
                             "domain, user_id, history and any other user field."),
    candidates: str = typer.Option(..., "--candidates", help="The candidate items: a .jsonl file (one item "
                                   "object per line: item_id, title, brand, price, ...) or a JSON list."),
    home: Optional[Path] = home_option(),
    top: Optional[int] = typer.Option(None, min=1, help="Print only the best K candidates."),
    out: Optional[Path] = typer.Option(None, help="Write the ranked candidates as JSONL here (default: print them)."),
    batch_size: int = typer.Option(TrainConfig.eval_batch_size, min=1, help="Candidates per model batch."),
    prefix_reuse: bool = typer.Option(True, "--prefix-reuse/--no-prefix-reuse", help="Decoder backbones: run "
                                      "the prompt tokens all candidates share once and reuse their key/value "
                                      "cache (exact up to float rounding). Encoder backbones never reuse."),
    threads: Optional[int] = threads_option(),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Rank candidate items for one user: one probability per candidate, best first (rank, candidate = its
    0-based position in --candidates, then the fields `unictr predict` prints)."""
    import json

    from unictr_core import workflows
    from unictr_core.data.data_io import atomic_write_text

    set_threads(threads)
    result = workflows.rank(resolve_home(home), _json_argument(user, "--user"),
                            _json_argument(candidates, "--candidates"), batch_size, precision, quantize,
                            prefix_reuse, source="--candidates")
    warn(result.notes)
    records = result.ranking.records()[:top]
    text = "".join(json.dumps(record) + "\n" for record in records)
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
    typer.secho(result.ranking.note, err=True)
