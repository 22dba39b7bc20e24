"""``unictr train``, ``unictr evaluate`` and ``unictr predict``."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Iterator, Optional

import typer
from tqdm.auto import tqdm

from unictr_cli import speed_options as speed
from unictr_cli.common import (USER_ERRORS, echo_field_usage, epoch_line, fail, home_option, resolve_home,
                               set_threads, split_csv, threads_option, user_errors, warn)
from unictr_core import distributed
from unictr_core.distributed import DistContext, DistributedError, LaunchOptions
from unictr_core.artifact import save_trained
from unictr_core.config import DSN_KINDS, LADDER_KINDS, ModelConfig, TrainConfig, tune_layers_text
from unictr_core.data_io import read_samples, write_samples
from unictr_core.dataset import load_dataset
from unictr_core.predict import prediction_records, predict_samples
from unictr_core.prompts import field_usage
from unictr_core.registry import load_model, templates_for
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


# --------------------------------------------------------------------------- several processes (torchrun)
LAUNCH_PARAMS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id")


def nproc_option():
    return typer.Option(None, "--nproc-per-node", min=1, help="Train with N processes on this machine: relaunches "
                        "this command under torchrun (DistributedDataParallel; gloo on CPU, nccl on GPUs).",
                        rich_help_panel="Distributed")


def nnodes_option():
    return typer.Option(None, "--nnodes", help="torchrun: number of machines (N or MIN:MAX). Needs --rdzv-endpoint.",
                        rich_help_panel="Distributed")


def node_rank_option():
    return typer.Option(None, "--node-rank", min=0, help="torchrun: this machine's rank (0 on the machine at "
                        "--rdzv-endpoint); selects the static rendezvous. Without it, ranks are assigned on arrival.",
                        rich_help_panel="Distributed")


def rdzv_endpoint_option():
    return typer.Option(None, "--rdzv-endpoint", help="torchrun: HOST:PORT of the rendezvous, reachable from every "
                        "machine (usually the first machine).", rich_help_panel="Distributed")


def rdzv_id_option():
    return typer.Option(None, "--rdzv-id", help="torchrun: job id, the same on every machine (default 'unictr').",
                        rich_help_panel="Distributed")


def dist_timeout_option():
    return typer.Option(None, "--dist-timeout", min=1.0, help="Seconds a process waits for the others in a "
                        f"collective before giving up with an error (default ${distributed.TIMEOUT_ENV} or "
                        f"{distributed.DEFAULT_TIMEOUT_S:.0f}).", rich_help_panel="Distributed")


def forwarded_arguments(ctx: typer.Context, drop: tuple[str, ...] = LAUNCH_PARAMS) -> list[str]:
    """The command path and the arguments the user gave (defaults left out), minus the ``drop`` parameters."""
    path = []
    node = ctx
    while node.parent is not None:
        path.insert(0, node.info_name)
        node = node.parent
    positional, options = [], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in drop or value is None:
            continue
        if param.param_type_name == "argument":
            positional += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name == "DEFAULT":
            continue
        if getattr(param, "is_flag", False):
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            if flag is not None:
                options.append(flag)
        elif isinstance(value, (list, tuple)) and param.multiple:
            for item in value:
                options += [param.opts[0], str(item)]
        else:
            options += [param.opts[0], str(value)]
    return [*path, *positional, *options]


def relaunch_under_torchrun(ctx: typer.Context, options: LaunchOptions) -> None:
    """Run the current command again in ``options.nproc_per_node`` processes under torchrun, then exit."""
    if distributed.under_torchrun():
        raise ValueError("--nproc-per-node/--nnodes/--node-rank/--rdzv-* start torchrun, but this process already "
                         f"runs under torchrun (RANK={os.environ.get('RANK')}): leave them out here")
    code = distributed.launch(options, "unictr_cli.main", forwarded_arguments(ctx))
    if code != 0:
        fail(f"distributed run failed (torchrun exit code {code}); the failing rank's error is printed above")
    raise typer.Exit(0)


def launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id) -> Optional[LaunchOptions]:
    """The torchrun launch the user asked for, or None when none of the launch options was given."""
    if all(v is None for v in (nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)):
        return None
    if nproc_per_node is None:
        raise ValueError("--nnodes/--node-rank/--rdzv-endpoint/--rdzv-id need --nproc-per-node "
                         "(processes per machine)")
    options = LaunchOptions(nproc_per_node=nproc_per_node, nnodes=nnodes or "1", node_rank=node_rank,
                            rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id)
    options.validate()
    return options


@contextlib.contextmanager
def process_group(timeout_s: Optional[float]) -> Iterator[DistContext]:
    """This process's place in a torchrun job (or a lone process); errors end it with one clear line.

    An error every rank shares (see :func:`unictr_core.distributed.agreement`) is printed by rank 0 only;
    other errors by the rank that met them, prefixed with its rank.
    """
    try:
        ctx = distributed.init_from_env(timeout_s)
    except DistributedError as exc:
        fail(str(exc))
    try:
        yield ctx
    except DistributedError as exc:
        if exc.reported_everywhere and not ctx.is_main:
            raise typer.Exit(1)
        fail(str(exc) if exc.reported_everywhere else f"{ctx.label}{exc}")
    except USER_ERRORS as exc:
        if not ctx.is_distributed or os.environ.get("UNICTR_DEBUG"):
            raise
        fail(f"{ctx.label}{exc}")
    finally:
        distributed.shutdown(ctx)


@user_errors
def train(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Dataset folder (train.jsonl, valid.jsonl, test.jsonl, dataset.yaml), "
                              "e.g. from `unictr data generate` or `unictr data prepare`."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains to train on. "
                                          "Default: every domain except the dataset's holdout domains."),
    backbone: str = typer.Option("minilm", help="Backbone: a registered name (see `unictr backbones`) or a local "
                                 "Hugging Face model directory."),
    home: Optional[Path] = home_option(),
    epochs: int = typer.Option(3, min=1, help="Maximum number of epochs."),
    batch_size: int = typer.Option(32, min=1, help="Global batch size (split over the processes of a distributed run)."),
    max_length: int = typer.Option(128, min=8, help="Maximum prompt length in tokens (oldest history dropped first)."),
    ladder: str = typer.Option("transformer", help=f"Ladder block kind: {', '.join(LADDER_KINDS)}."),
    ladder_freq: Optional[int] = typer.Option(None, min=1, help="One ladder block every N backbone layers "
                                              "(default: about 4 blocks)."),
    lora_r: int = typer.Option(8, min=1), lora_alpha: int = typer.Option(32, min=1),
    lora_dropout: float = typer.Option(0.05, min=0.0, max=0.99, help="Dropout on the LoRA path."),
    tower: str = typer.Option("512,256,128", help="Tower MLP widths."),
    dropout: float = typer.Option(0.1, min=0.0, max=0.99),
    dsn: str = typer.Option(TrainConfig.dsn, "--dsn", help=f"DSN kind ({', '.join(DSN_KINDS)}). residual: each "
                            "DSN's logit is the general network's plus a learned correction that starts at zero, "
                            "as `domain add` does, so a DSN starts as good as the general network. standalone: "
                            "the paper's DSN, its own prediction from scratch."),
    patience: int = typer.Option(2, min=1, help="Stop after this many epochs without a better validation AUC."),
    ids: str = typer.Option(ModelConfig.ids, "--ids", help="ID-aware Uni-CTR: none (the paper's text-only model), "
                            "dsn (each DSN also reads learned, hashed embeddings of the user, the item and the "
                            "categorical fields; its tables live in its bundle) or all (the general network too; "
                            "its tables are part of the frozen core). Unseen IDs embed to zero."),
    id_buckets: int = typer.Option(ModelConfig.id_buckets, min=2, help="Hash buckets of the ID embedding tables."),
    seed: int = typer.Option(0),
    max_rows: Optional[int] = typer.Option(None, min=1, help="Subsample at most N training rows per domain."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after N optimiser steps (smoke runs)."),
    tune_layers: str = speed.tune_layers_option(),
    precision: str = speed.precision_option(),
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
    tuned = speed.parse_tune_layers(tune_layers)
    launch = launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)
    if launch is not None:
        relaunch_under_torchrun(ctx, launch)
    set_threads(threads)
    with process_group(dist_timeout) as group:
        with distributed.agreement(group, "reading the dataset"):
            dataset = load_dataset(data)
            chosen = split_csv(domains)
            if chosen is None:
                holdout = set(dataset.meta.get("holdout_domains") or [])
                chosen = sorted({s.domain for s in dataset.train} - holdout)
            missing = sorted(set(chosen) - {s.domain for s in dataset.train})
            if missing:
                raise ValueError(f"--domains: no training rows for {', '.join(missing)} in {data / 'train.jsonl'}")
            model_config = ModelConfig(backbone=backbone, max_length=max_length, lora_r=lora_r,
                                       lora_alpha=lora_alpha, lora_dropout=lora_dropout, ladder_kind=ladder,
                                       ladder_freq=ladder_freq, tower_dims=[int(x) for x in split_csv(tower) or []],
                                       dropout=dropout, ids=ids, id_buckets=id_buckets, tune_layers=tuned)
            model_config.validate()
            train_config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
                                       domains=chosen, max_steps=max_steps, dsn=dsn, precision=precision,
                                       max_cache_gb=max_cache_gb, cache_dtype=cache_dtype,
                                       cache_dir=speed.cache_folder(cache_dir, resolve_home(home)))
            train_config.validate()
        train_rows = subsample(dataset.train, max_rows, seed)
        if group.is_main:
            processes = f", {group.world_size} processes ({group.backend})" if group.is_distributed else ""
            typer.echo(f"training on {', '.join(chosen)} with backbone '{backbone}' "
                       f"({sum(s.domain in chosen for s in train_rows)} training rows{processes}; {dsn} DSNs; "
                       f"IDs: {ids}; LoRA in {tune_layers_text(model_config.tune_layers)})")
        from unictr_core.training import train_unictr

        home_dir = resolve_home(home)
        templates = templates_for(chosen, home_dir, dataset.template)
        if group.is_main:
            echo_field_usage(field_usage(templates, [s for s in train_rows if s.domain in chosen]))
        result = train_unictr(train_rows, dataset.valid, model_config, train_config,
                              templates=templates, dist_ctx=group,
                              on_epoch=lambda record: tqdm.write(epoch_line(record)))
        if not group.is_main:
            return
        history = [{k: v for k, v in r.items() if k != "valid"} for r in result.history]
        training = {"dataset": str(data), "domains": chosen, "best_epoch": result.best_epoch,
                    "valid_auc": result.best_valid_auc, "seconds": round(result.seconds, 1),
                    "config": train_config.to_dict(), "distributed": result.distributed, "history": history,
                    "precision": result.precision, "hidden_state_cache": result.cache}
        per_domain_history = {d: {"training": {"best_epoch": result.best_epoch, "history": [
            {"epoch": r["epoch"], "train_loss": r["train_loss"], "valid_auc": r["valid"].get(d, {}).get("auc"),
             "valid_logloss": r["valid"].get(d, {}).get("logloss"), "seconds": r["seconds"]}
            for r in result.history]}} for d in chosen}
        notes: list[str] = []  # one snapshot switch under the home's lock: readers see the old home or the new
        fingerprint = save_trained(result.model, home_dir, training, result.valid_metrics, per_domain_history, notes)
        warn(notes)
        rows = [[d, m["rows"], m["auc"], m["logloss"], m["general_auc"]] for d, m in result.valid_metrics.items()]
        typer.echo(format_table(["domain", "valid rows", "AUC (DSN)", "logloss", "AUC (general)"], rows))
        typer.echo(f"best epoch {result.best_epoch}, {result.seconds:.0f} s ({result.precision}"
                   f"{cache_text(result.cache)}); core {fingerprint[:12]} and {len(chosen)} domain bundles written "
                   f"to {home_dir}")


def cache_text(cache: dict) -> str:
    """The hidden-state cache of a training run, for its summary line."""
    if not cache:
        return ""
    disk = f", {cache['disk_bytes'] / 2**30:.2f} GiB of it memory-mapped" if cache["disk_bytes"] else ""
    return (f"; hidden states of layers {','.join(map(str, cache['layers']))} cached once: {cache['rows']} rows, "
            f"{cache['bytes'] / 2**30:.2f} GiB {cache['storage']}{disk}, {cache['seconds']:.0f} s")


def _load_split(data: Path, split: str):
    if data.is_dir():
        return read_samples(data / f"{split}.jsonl", require_labels=True, require_rows=True)
    return read_samples(data, require_labels=True, require_rows=True)


def _serving_model(home: Optional[Path], samples, precision: str, quantize: str):
    """The home's model with the DSNs of ``samples``' domains, int8-quantized if asked; notes as warnings."""
    import torch

    from unictr_core import precision as precisions

    int8 = speed.check_quantize(quantize)
    precisions.resolve(precision, torch.device("cpu"), int8)  # a bad combination fails before the model loads
    model, notes = load_model(resolve_home(home), domains=sorted({s.domain for s in samples}))
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    if int8:
        precisions.quantize_int8(model)
    return model


@user_errors
def evaluate(
    data: Path = typer.Option(..., "--data", help="A dataset folder (its --split file is used) or a .jsonl/.csv file."),
    split: str = typer.Option("test", help="Which split of a dataset folder: train, valid or test."),
    home: Optional[Path] = home_option(),
    reference: str = typer.Option("general", help="RelaImpr reference: 'general' (the general network) or the "
                                  "path of an earlier `unictr evaluate --out` JSON report."),
    out: Optional[Path] = typer.Option(None, help="Write the report as JSON here."),
    batch_size: int = typer.Option(64, min=1),
    threads: Optional[int] = threads_option(),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Per-domain AUC and logloss, the mean of the per-domain AUCs, the pooled overall AUC, and RelaImpr (shown
    only where the reference AUC is above 0.5); domains without a DSN are scored zero-shot."""
    set_threads(threads)
    samples = _load_split(data, split)
    reference_report = None
    if reference != "general":
        reference_report = json.loads(Path(reference).read_text(encoding="utf-8"))
    model = _serving_model(home, samples, precision, quantize)
    with tqdm(total=len(samples), desc="evaluating", unit="sample") as bar:
        predictions = predict_samples(model, samples, batch_size, progress=bar, precision=precision)
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
    threads: Optional[int] = threads_option(),
    precision: str = speed.precision_option(),
    quantize: str = speed.quantize_option(),
) -> None:
    """Click probabilities per sample: the domain's DSN, or the general network (zero-shot) for a domain without one."""
    set_threads(threads)
    samples = read_samples(input, require_rows=True)
    if domain is not None:
        from unictr_core.data_io import validate_domain_name

        validate_domain_name(domain, "--domain")
        for s in samples:
            s.domain = domain
    model = _serving_model(home, samples, precision, quantize)
    predictions = predict_samples(model, samples, batch_size, precision=precision)
    lines = [json.dumps(record) for record in prediction_records(samples, predictions)]
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
