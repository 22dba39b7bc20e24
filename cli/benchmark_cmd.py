"""``unictr benchmark``: Uni-CTR against the eight baselines on one dataset folder (Table III + zero-shot)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unictr_cli import speed_options as speed
from unictr_cli.common import (dsn_shrinkage_option, id_fields_option, id_history_option, id_lr_scale_option,
                               set_threads, split_csv, threads_option, user_errors)
from unictr_core.config import FILL_PRECISIONS, LR_SCHEDULES, BaselineSettings, ModelConfig, TrainConfig


@user_errors
def benchmark(
    data: Path = typer.Option(..., "--data", help="Dataset folder (train/valid/test.jsonl + dataset.yaml), e.g. "
                              "from `unictr data prepare movielens`."),
    models: Optional[str] = typer.Option(None, help="Comma-separated models: registered baselines (deepfm, dcn, "
                                         "autoint, xdeepfm, pnn, shared_bottom, mmoe, ple, star, ...) and/or unictr. "
                                         "Default: all of them."),
    out: Path = typer.Option(Path("benchmark-results"), help="Folder for benchmark.json, benchmark.txt and "
                             "benchmark.png (the PNG needs matplotlib)."),
    max_rows: Optional[int] = typer.Option(None, min=1, help="At most N training rows per domain (a seeded "
                                          "subsample)."),
    max_eval_rows: Optional[int] = typer.Option(None, min=1, help="Subsample at most N validation and N test rows "
                                                "per domain."),
    epochs: int = typer.Option(BaselineSettings.epochs, min=1,
                               help="Epoch cap for the baselines (early stopping on validation AUC)."),
    uni_epochs: Optional[int] = typer.Option(None, min=1, help="Epoch cap for Uni-CTR (default: --epochs)."),
    uni_backbone: str = typer.Option(ModelConfig.backbone, help="Uni-CTR backbone: a registered name or a local "
                                     "Hugging Face model directory."),
    uni_batch_size: int = typer.Option(TrainConfig.batch_size, min=1, help="Uni-CTR training batch size."),
    uni_max_length: int = typer.Option(ModelConfig.max_length, min=8, help="Uni-CTR prompt length cap in tokens."),
    uni_max_steps: Optional[int] = typer.Option(None, min=1, help="Stop Uni-CTR training after N steps."),
    uni_dsn: str = typer.Option(TrainConfig.dsn, help="Uni-CTR's DSN kind in joint training: residual (the "
                                "general network's logit + a learned correction) or standalone (the paper's)."),
    uni_dsn_stats: bool = typer.Option(TrainConfig.dsn_stats, "--uni-dsn-stats/--no-uni-dsn-stats", help="Uni-CTR's "
                                       "DSNs also read count statistics; see `unictr train --dsn-stats`."),
    uni_lr_schedule: str = typer.Option(TrainConfig.lr_schedule, "--uni-lr-schedule", help="Uni-CTR's "
                                        f"learning-rate schedule ({', '.join(LR_SCHEDULES)}); see `unictr train "
                                        "--lr-schedule`."),
    uni_head_lr: float = typer.Option(TrainConfig.head_lr[1], "--uni-head-lr", min=0.0, help="Uni-CTR's peak "
                                      "learning rate of the heads; see `unictr train --head-lr`."),
    uni_dropout: float = typer.Option(ModelConfig.dropout, "--uni-dropout", min=0.0, max=0.99, help="Uni-CTR's "
                                      "dropout in the ladder blocks and towers; see `unictr train --dropout`."),
    uni_fill_precision: str = typer.Option(TrainConfig.fill_precision, "--uni-fill-precision",
                                           metavar="|".join(FILL_PRECISIONS), help="Uni-CTR's frozen backbone "
                                           "over the cached rows (see `unictr train --fill-precision`); other than "
                                           "same, the test rows are predicted in it too."),
    uni_ids: str = typer.Option(ModelConfig.ids, help="Uni-CTR's ID embeddings: none (text only, the paper's), dsn "
                                "(in the DSNs) or all (DSNs and general network); see `unictr train --ids`."),
    uni_id_history: int = id_history_option("--uni-id-history"),
    uni_id_fields: str = id_fields_option("--uni-id-fields"),
    uni_id_lr_scale: float = id_lr_scale_option("--uni-id-lr-scale"),
    uni_dsn_shrinkage: bool = dsn_shrinkage_option("uni-dsn-shrinkage"),
    uni_tune_layers: str = typer.Option("all", "--uni-tune-layers", metavar="all|K", help="LoRA in which of "
                                        "Uni-CTR's layers: all (the paper), K (the top K), 0 (frozen backbone); "
                                        "see `unictr train --tune-layers`."),
    uni_token_summary: int = speed.token_summary_option("--uni-token-summary"),
    holdout: Optional[str] = typer.Option(None, help="Comma-separated held-out domains for the zero-shot table "
                                          "(excluded from training). Default: the dataset's holdout_domains."),
    seed: int = typer.Option(BaselineSettings.seed, help="One seed for every model and for the subsampling."),
    batch_size: int = typer.Option(BaselineSettings.batch_size, min=1, help="Baseline batch size."),
    lr: float = typer.Option(BaselineSettings.lr, min=0.0, help="Baseline Adam learning rate."),
    embed_dim: int = typer.Option(BaselineSettings.embed_dim, min=1, help="Baseline embedding size."),
    patience: int = typer.Option(BaselineSettings.patience, min=1,
                                 help="Baseline early stopping: epochs without a better validation AUC."),
    threads: Optional[int] = threads_option(),
    progress: bool = typer.Option(True, "--progress/--quiet", help="Show per-epoch progress."),
) -> None:
    """Train the chosen models on the same rows, split and seed; print Table III, the zero-shot table and timings."""
    from unictr_core.benchmark import BenchmarkOptions, format_report, run_benchmark, write_outputs

    set_threads(threads)

    options = BenchmarkOptions(
        models=split_csv(models), max_rows=max_rows, max_eval_rows=max_eval_rows, epochs=epochs,
        uni_epochs=uni_epochs, uni_backbone=uni_backbone, uni_batch_size=uni_batch_size,
        uni_max_length=uni_max_length, uni_max_steps=uni_max_steps, uni_dsn=uni_dsn, uni_dsn_stats=uni_dsn_stats,
        uni_lr_schedule=uni_lr_schedule, uni_head_lr=uni_head_lr, uni_dropout=uni_dropout,
        uni_fill_precision=uni_fill_precision, uni_ids=uni_ids, uni_id_history=uni_id_history,
        uni_id_fields=split_csv(uni_id_fields) or [], uni_id_lr_scale=uni_id_lr_scale,
        uni_dsn_shrinkage=uni_dsn_shrinkage, uni_tune_layers=speed.parse_tune_layers(uni_tune_layers),
        uni_token_summary=uni_token_summary, seed=seed,
        holdout=split_csv(holdout) if holdout is not None else None,
        baseline=BaselineSettings(batch_size=batch_size, lr=lr, embed_dim=embed_dim, patience=patience),
    )
    if holdout is not None and options.holdout is None:
        options.holdout = []          # --holdout "" : no zero-shot table, every domain trained
    report = run_benchmark(data, options, log=lambda m: typer.echo(m, err=True), progress=progress)
    paths = write_outputs(report, out)
    typer.echo(format_report(report))
    typer.echo("")
    typer.echo(f"wrote {paths['json']} and {paths['text']}")
    if paths["chart"] is not None:
        typer.echo(f"wrote {paths['chart']}")
    else:
        typer.echo(report["chart_note"])
