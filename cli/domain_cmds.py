"""``unictr domain add | remove | list | show``: domains as plugins; parse, call the library, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from unictr_cli import launching
from unictr_cli import speed_options as speed
from unictr_cli.common import (dsn_shrinkage_option, echo_field_usage, epoch_line, home_option, print_epoch,
                               resolve_home, set_threads, split_csv, threads_option, user_errors, warn)
from unictr_core.config import DOMAIN_ADD_DEFAULTS, DOMAIN_ADD_LR_SPAN, domain_add_head_lr
from unictr_core.data.tables import format_table

SMALL_VALIDATION = 200  # validation rows below which `domain add` says its choices rest on few rows
COMPARE_KEY = "compare"  # the bundle metrics' comparison (unictr_core.baselines.compare.METRICS_KEY, no torch here)

domain_app = typer.Typer(help="Domains: add a DSN for a new domain against the frozen core, remove one, list them.",
                         no_args_is_help=True)


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


@domain_app.command("add")
@user_errors
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Domain name: lowercase letters, digits, '_' or '-'."),
    data: Path = typer.Option(..., "--data", help="The domain's labelled rows: a .jsonl/.csv file (split 80/10/10 "
                              "by time) or a dataset folder (its train/valid/test rows of NAME)."),
    template: Optional[Path] = typer.Option(None, "--template", help="Prompt template YAML (or a domain definition "
                                            "with 'template:'). Default: the template the registry knows for NAME "
                                            "(shipped definition or package), else the template in --data's "
                                            "dataset.yaml, else the core's default."),
    home: Optional[Path] = home_option(),
    epochs: int = typer.Option(DOMAIN_ADD_DEFAULTS.epochs, min=1,
                               help="Maximum number of epochs (early stopping on validation AUC)."),
    batch_size: int = typer.Option(DOMAIN_ADD_DEFAULTS.batch_size, min=1, help="Training batch size."),
    lr: float = typer.Option(DOMAIN_ADD_DEFAULTS.head_lr[1], min=0.0,
                             help="Learning rate of the first step; it decays along a cosine to "
                             f"lr/{DOMAIN_ADD_LR_SPAN} at the last epoch (the linear term on the count "
                             "statistics: 10x)."),
    patience: int = typer.Option(DOMAIN_ADD_DEFAULTS.patience, min=1,
                                 help="Stop after this many epochs without a better validation AUC."),
    seed: int = typer.Option(DOMAIN_ADD_DEFAULTS.seed, help="Random seed: the DSN's initialisation, batch order, "
                              "the --max-rows subsample and the split of a file whose rows have no timestamp."),
    max_rows: Optional[int] = typer.Option(None, min=1, help="At most N training rows per domain (a seeded "
                                          "subsample)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Compute the frozen backbone's hidden states once "
                               "and reuse them every epoch (default), or run the backbone every epoch."),
    max_cache_gb: float = speed.max_cache_gb_option(),
    cache_dir: Optional[Path] = speed.cache_dir_option(),
    cache_dtype: str = speed.cache_dtype_option(),
    precision: str = speed.precision_option(),
    fill_precision: str = speed.fill_precision_option(),
    residual: bool = typer.Option(True, "--residual/--standalone", help="Residual DSN (default): it starts as "
                                  "the general network's zero-shot prediction and learns the domain's correction; "
                                  "the untrained start is scored as epoch 0, so the DSN kept is never worse on "
                                  "validation than zero-shot, in AUC or logloss (an epoch whose validation "
                                  "logloss is above the start's is not kept). --standalone: the paper's DSN, "
                                  "trained from scratch."),
    stats: bool = typer.Option(True, "--stats/--no-stats", help="The DSN also reads the domain's count "
                               "statistics (default): the user's and the item's past positive rate and count "
                               "(causal: from earlier training rows only) and the base rate, stored in the bundle."),
    dsn_ids: bool = typer.Option(True, "--dsn-ids/--no-dsn-ids", help="Train the DSN's own ID embeddings "
                                 "(default; a core trained with --ids dsn|all gives every DSN a table). "
                                 "--no-dsn-ids leaves them at zero: the DSN then knows users and items only "
                                 "through the count statistics."),
    dsn_shrinkage: bool = dsn_shrinkage_option(),
    compare: Optional[str] = typer.Option(None, "--compare", metavar="MODELS", help="Comma-separated baselines "
                                          "(e.g. dcn or dcn,deepfm,item_rate; any of `unictr benchmark --models` "
                                          "but unictr) to train after the DSN on the same train / valid / test "
                                          "rows; their test AUC with its 95% interval, logloss, ECE and training "
                                          "seconds are printed next to the DSN's and stored in the bundle's "
                                          "metrics. A report only: the registered DSN is the same. Default: none."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing local bundle of NAME."),
    description: Optional[str] = typer.Option(None, help="Description stored in the bundle."),
    nproc_per_node: Optional[int] = launching.nproc_option(),
    nnodes: Optional[str] = launching.nnodes_option(),
    node_rank: Optional[int] = launching.node_rank_option(),
    rdzv_endpoint: Optional[str] = launching.rdzv_endpoint_option(),
    rdzv_id: Optional[str] = launching.rdzv_id_option(),
    dist_timeout: Optional[float] = launching.dist_timeout_option(),
    threads: Optional[int] = threads_option(),
) -> None:
    """Train a DSN for a new domain against the frozen core and register it (atomically).

    A --standalone DSN that never beats its untrained (random) start on validation is not registered
    (non-zero exit).

    With --nproc-per-node N the command relaunches itself under torchrun (as `unictr train` does); only rank 0
    registers the bundle and prints.
    """
    from dataclasses import replace as changed

    from unictr_core import DomainAddOptions, DomainData, workflows

    launch = launching.launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)
    if launch is not None:
        launching.relaunch_under_torchrun(ctx, launch)
    set_threads(threads)
    home_dir = resolve_home(home)
    with launching.process_group(dist_timeout) as group:
        config = changed(DOMAIN_ADD_DEFAULTS, epochs=epochs, batch_size=batch_size, head_lr=domain_add_head_lr(lr),
                         patience=patience, seed=seed, precision=precision, fill_precision=fill_precision,
                         dsn="residual" if residual else "standalone", max_cache_gb=max_cache_gb,
                         cache_dir=None if cache_dir is None else str(cache_dir), cache_dtype=cache_dtype,
                         dsn_shrinkage=dsn_shrinkage)
        plan = workflows.plan_domain_add(home_dir, name, DomainData(data, max_rows=max_rows), config,
                                         template, replace, split_csv(compare), group)
        if group.is_main:
            _echo_plan(plan, group, residual, cache)
        options = DomainAddOptions(stats=stats, ids=dsn_ids, cache=cache, dist_ctx=group, on_epoch=print_epoch)
        done = workflows.add_domain(plan, config, options, description)
        if done is not None:  # rank 0
            _echo_added(plan, done)


def _echo_plan(plan, group, residual: bool, cache: bool) -> None:
    from unictr_core.modeling import precision as precisions

    for note in plan.notes:
        typer.echo(note)
    echo_field_usage(plan.field_usage())
    if plan.shadowed_source is not None:
        typer.secho(f"note: '{plan.name}' is also provided by {plan.shadowed_source}; the local bundle will take "
                    "precedence", fg=typer.colors.YELLOW, err=True)
    processes = f"; {group.world_size} processes ({group.backend})" if group.is_distributed else ""
    typer.echo(f"training a DSN for '{plan.name}' against core {plan.core_fingerprint[:12]} "
               f"({len(plan.train_rows)} train / {len(plan.valid_rows)} valid / {len(plan.test_rows)} held-out rows; "
               f"{'residual' if residual else 'standalone'} DSN; hidden-state cache {'on' if cache else 'off'}; "
               f"{precisions.describe(plan.precision, group.device)}{processes})")
    if plan.compare:
        typer.echo(f"then training {', '.join(plan.compare)} on the same rows, for comparison (--compare)")


def _echo_added(plan, done) -> None:
    from unictr_core.fit.report import domain_add_table

    warn(done.notes)
    result, name = done.training, plan.name
    typer.echo(domain_add_table(name, result.test, done.floors))
    if done.comparison is not None:
        _echo_comparison(name, done.comparison, result)
    k = result.shrinkage
    if k:
        typer.echo(f"DSN kept: {k['scale']:g} of its correction to the general network (chosen on {k['valid_rows']} "
                   f"validation rows; logloss {_num(k['valid_logloss_before'])} -> {_num(k['valid_logloss_after'])})")
    c = result.calibration
    if c and (c["scale"], c["bias"]) == (1.0, 0.0):
        typer.echo(f"calibration: none (on {c['valid_rows']} validation rows a temperature did not lower the logloss "
                   "beyond noise)")
    elif c:
        typer.echo(f"calibration (temperature, fitted on {c['valid_rows']} validation rows): p = sigmoid("
                   f"{c['scale']:.3f} * logit {c['bias']:+.3f}); validation logloss {c['valid_logloss_before']:.4f} "
                   f"-> {c['valid_logloss_after']:.4f}")
    s = result.seconds
    start = " (the untrained start: no epoch beat it on validation)" if result.best_epoch == 0 else ""
    typer.echo(f"best epoch {result.best_epoch}{start} of {len(result.history) - 1}, chosen on "
               f"{result.rows['valid']} validation rows; {s['total']:.1f} s "
               f"(hidden states {s['hidden_states']:.1f} s, training {s['train']:.1f} s, "
               f"evaluation {s['evaluate']:.1f} s)")
    if result.rows["valid"] < SMALL_VALIDATION:
        typer.secho(f"note: the best epoch and the calibration rest on {result.rows['valid']} validation rows only; "
                    f"with fewer than {SMALL_VALIDATION} the validation AUC is uncertain by about +-0.05 or more",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"domain '{name}' registered: {done.target}")


def _echo_comparison(name: str, comparison: dict, result) -> None:
    stored = dict(result.metrics(), **{COMPARE_KEY: comparison})
    typer.echo(_comparison_table(name, stored, result.seconds.get("total")))


def _rows_text(comparison: dict) -> str:
    rows = comparison.get("rows") or {}
    return f"{rows.get('train', '?')} train / {rows.get('valid', '?')} valid / {rows.get('test', '?')} test"


def _gain_text(gain: Optional[dict]) -> str:
    """The DSN's paired AUC gain over a model, e.g. ``+0.031 [+0.004, +0.058]`` (``-`` when not recorded)."""
    return "-" if not gain else f"{gain['gain']:+.4f} [{gain['low']:+.3f}, {gain['high']:+.3f}]"


def _interval_text(interval) -> str:
    """As ``unictr_core.fit.report.interval_text``, which imports torch (`domain show` stays light)."""
    return "n/a" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _kind(category: Optional[str]) -> str:
    """A baseline's category as the table names it: ``count rule``, ``single-domain ID model``, ..."""
    if not category:
        return "?"
    if category.startswith("floor"):
        return "count rule"
    return f"{category} ID model" if category in ("single-domain", "multi-domain") else category


def _comparison_table(name: str, stored: dict, dsn_seconds: Optional[float] = None) -> str:
    """The comparison as text: the DSN (from the bundle's metrics ``stored``) and every compared model on the
    same held-out rows, each with AUC, its 95 % interval, logloss, ECE and training seconds.

    Works from the stored metrics alone (no torch), so ``domain add`` and ``domain show`` print the same table.
    """
    comparison = stored.get(COMPARE_KEY) or {}
    test_rows = (comparison.get("rows") or {}).get("test", stored.get("test_rows"))
    rows = [[test_rows, f"DSN '{name}'", stored.get("test_auc"), _interval_text(stored.get("test_auc_interval")),
             stored.get("test_logloss"), stored.get("test_ece"),
             "-" if dsn_seconds is None else f"{round(dsn_seconds, 2):.1f}", "-"]]  # as stored: rounded to 0.01 s
    errors = []
    for model, m in (comparison.get("models") or {}).items():
        label = f"{model} ({_kind(m.get('category'))})"
        if m.get("error"):
            rows.append([test_rows, label, "failed", "-", "-", "-", "-", "-"])
            errors.append(f"{model} failed: {m['error']}")
            continue
        rows.append([test_rows, label, m.get("test_auc"), _interval_text(m.get("test_auc_interval")),
                     m.get("test_logloss"), m.get("test_ece"), f"{m.get('train_seconds', 0.0):.1f}",
                     _gain_text(m.get("dsn_gain"))])
    head = (f"Compared on the same {_rows_text(comparison)} rows as the DSN (each model fitted on the train part, "
            f"early-stopped on the valid part, scored on the test part; seed {comparison.get('seed', '?')}):")
    table = format_table(["held-out rows", "model", "AUC", "AUC 95% interval", "logloss", "ECE", "train s",
                          "DSN AUC - model's [paired 95%]"], rows)
    foot = ("intervals: bootstrap 95% (1,000 resamples of the test rows, the same for every model; the gain's: "
            "both scored on each resample); train s: wall time of fitting (features included; the DSN's: its whole "
            "add, hidden states included)")
    return "\n".join([head, table, foot, *errors])


@domain_app.command("remove")
@user_errors
def remove(
    name: str = typer.Argument(..., help="The domain whose local bundle to delete."),
    home: Optional[Path] = home_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a domain's local bundle; for a domain of an installed package, explain how to disable it instead."""
    from unictr_core import workflows
    from unictr_core.store.registry import Registry

    home_dir = resolve_home(home)
    registry = Registry.open(home_dir)  # once: the confirmation, the removal and what is still known after it
    if not yes:
        entry = workflows.removable(home_dir, name, registry)
        typer.confirm(f"Delete the local bundle of domain '{name}' ({entry.bundle})?", abort=True)
    result = workflows.remove_domain(home_dir, name, registry)
    warn(result.notes)
    typer.echo(f"domain '{name}' removed from {home_dir}")
    after = result.still_known
    if after is not None:
        typer.echo(f"'{name}' is still known from {after.source} ({after.status})")


def _entry_rows(registry) -> list[list]:
    rows = []
    for name, e in registry.entries.items():
        rows.append([name, e.source, e.status, "-" if e.compatible is None else ("yes" if e.compatible else "no"),
                     _human_size(e.size_bytes) if e.bundle is not None else "-", *_stored_auc(e.metrics)])
    return rows


def _stored_auc(metrics: dict) -> tuple:
    """(AUC, where it was measured): `domain add` stores held-out test metrics, `unictr train` validation ones."""
    if metrics.get("test_auc") is not None:
        return metrics["test_auc"], f"test, {metrics.get('test_rows', '?')} rows"
    if metrics.get("auc") is not None:
        return metrics["auc"], f"valid, {metrics.get('rows', '?')} rows"
    return "-", "-"


@domain_app.command("list")
@user_errors
def list_domains(
    home: Optional[Path] = home_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Every domain: its source (local or which package), compatibility with the core, size and stored AUC."""
    from unictr_core.store.registry import Registry

    registry = Registry.open(resolve_home(home))
    if as_json:
        typer.echo(json.dumps(registry.to_dict(), indent=2))
        return
    core = "broken (see the warning below)" if registry.core_problem else (
        registry.core_fingerprint[:12] if registry.core_fingerprint else "none")
    typer.echo(f"core: {core} ({registry.home})")
    typer.echo(format_table(["domain", "source", "status", "compatible", "size", "AUC", "AUC measured on"],
                            _entry_rows(registry)))
    typer.echo("status: ready = DSN for this core; zero-shot = template only, the general network predicts; "
               "incompatible = DSN of another core (predicted zero-shot); broken = does not load (predicted "
               "zero-shot; the reason is below)")
    broken = [f"domain '{name}' ({e.source}) is broken: {e.problem}" for name, e in registry.entries.items()
              if e.problem is not None]
    warn(broken + registry.problems)


@domain_app.command("show")
@user_errors
def show(
    name: str = typer.Argument(...),
    home: Optional[Path] = home_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Everything the registry knows about one domain."""
    from unictr_core.store.registry import Registry

    entry = Registry.open(resolve_home(home)).require(name)
    data = entry.to_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key in ("name", "description", "source", "plugin", "distribution", "status", "compatible", "bundle",
                "core_fingerprint", "created", "problem"):
        if data[key] not in (None, ""):
            typer.echo(f"{key + ':':24} {data[key]}")
    if entry.bundle is not None:
        typer.echo(f"{'size:':24} {_human_size(entry.size_bytes)}")
    comparison = None
    for key, value in entry.metrics.items():
        if key == COMPARE_KEY and isinstance(value, dict):
            comparison = value  # printed as a table below
            continue
        typer.echo(f"{'metric ' + key + ':':24} {value}")
    if comparison is not None:
        seconds = ((entry.training or {}).get("seconds") or {}).get("total")
        try:
            table = _comparison_table(name, entry.metrics, seconds if isinstance(seconds, (int, float)) else None)
        except (TypeError, ValueError, AttributeError, IndexError, KeyError):  # a hand-edited record: shown raw
            table = f"{'metric ' + COMPARE_KEY + ':':24} {comparison}"
        typer.echo(table)
    history = (entry.training or {}).get("history") or []
    if history:
        typer.echo(f"training history (best epoch {entry.training.get('best_epoch', '?')}):")
        for record in history:
            typer.echo(f"  {epoch_line(record)}")
    for other in entry.others:
        typer.echo(f"{'also from:':24} {other}")
    typer.echo("template:")
    if entry.template is None:
        typer.echo("  (the core's default template)")
    else:
        for part in entry.template.parts:
            typer.echo(f"  {part!r}")
        typer.echo(f"  history item: {entry.template.history_item!r}")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
