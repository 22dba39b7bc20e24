"""``unictr domain add | remove | list | show``: domains as plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from tqdm.auto import tqdm

from unictr_cli import model_cmds
from unictr_cli import speed_options as speed
from unictr_cli.common import (echo_field_usage, epoch_line, home_option, resolve_home, set_threads,
                               threads_option, user_errors, warn)
from unictr_core import distributed
from unictr_core.prompts import TemplateSet, field_usage
from unictr_core.report import format_table

domain_app = typer.Typer(help="Domains: add a DSN for a new domain against the frozen core, remove one, list them.",
                         no_args_is_help=True)


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _read_template(path: Path, name: str):
    """A PromptTemplate YAML file, or a domain definition (``name``/``description``/``template``)."""
    import yaml

    from unictr_core.prompts import PromptTemplate

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--template: file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--template {path}: not valid YAML: {exc}") from None
    description = ""
    if isinstance(data, dict) and "template" in data:
        description = str(data.get("description") or "")
        data = data["template"]
    if isinstance(data, dict):
        data = dict(data)
        data.setdefault("domain", name)
    return PromptTemplate.from_dict(data, source=f"--template {path}"), description


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
    epochs: int = typer.Option(20, min=1, help="Maximum number of epochs (early stopping on validation AUC)."),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(3e-3, min=0.0, help="Peak of the cyclic learning rate (the base is lr/100)."),
    patience: int = typer.Option(5, min=1, help="Stop after this many epochs without a better validation AUC."),
    seed: int = typer.Option(0),
    max_rows: Optional[int] = typer.Option(None, min=1, help="Use at most N training rows (seeded subsample)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Compute the frozen backbone's hidden states once "
                               "and reuse them every epoch (default), or run the backbone every epoch."),
    max_cache_gb: float = speed.max_cache_gb_option(),
    cache_dir: Optional[Path] = speed.cache_dir_option(),
    cache_dtype: str = speed.cache_dtype_option(),
    precision: str = speed.precision_option(),
    residual: bool = typer.Option(True, "--residual/--standalone", help="Residual DSN (default): it starts as "
                                  "the general network's zero-shot prediction and learns the domain's correction; "
                                  "the untrained start is scored as epoch 0, so the DSN kept is never worse on "
                                  "validation than zero-shot. --standalone: the paper's DSN, trained from scratch."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing local bundle of NAME."),
    description: Optional[str] = typer.Option(None, help="Description stored in the bundle."),
    nproc_per_node: Optional[int] = model_cmds.nproc_option(),
    nnodes: Optional[str] = model_cmds.nnodes_option(),
    node_rank: Optional[int] = model_cmds.node_rank_option(),
    rdzv_endpoint: Optional[str] = model_cmds.rdzv_endpoint_option(),
    rdzv_id: Optional[str] = model_cmds.rdzv_id_option(),
    dist_timeout: Optional[float] = model_cmds.dist_timeout_option(),
    threads: Optional[int] = threads_option(),
) -> None:
    """Train a DSN for a new domain against the frozen core and register it (atomically).

    A --standalone DSN that never beats its untrained (random) start on validation is not registered
    (non-zero exit).

    With --nproc-per-node N the command relaunches itself under torchrun (as `unictr train` does); only rank 0
    registers the bundle and prints.
    """
    launch = model_cmds.launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)
    if launch is not None:
        model_cmds.relaunch_under_torchrun(ctx, launch)
    set_threads(threads)
    with model_cmds.process_group(dist_timeout) as group:
        _add(group, name, data, template, home, epochs, batch_size, lr, patience, seed, max_rows, cache,
             max_cache_gb, residual, replace, description, cache_dir, precision, cache_dtype)


def _add(group, name, data, template, home, epochs, batch_size, lr, patience, seed, max_rows, cache, max_cache_gb,
         residual, replace, description, cache_dir=None, precision="auto", cache_dtype="auto") -> None:
    from unictr_cli.model_cmds import subsample
    from unictr_core.artifact import CORE_DIR, load_core
    from unictr_core.config import TrainConfig
    from unictr_core import precision as precisions
    from unictr_core.data_io import validate_domain_name
    from unictr_core.dataset import dataset_template
    from unictr_core.domain_training import domain_splits, train_domain
    from unictr_core.registry import Registry, RegistryError

    echo = typer.echo if group.is_main else (lambda *a, **k: None)
    secho = typer.secho if group.is_main else (lambda *a, **k: None)
    with distributed.agreement(group, f"reading the core and the data of '{name}'"):
        validate_domain_name(name, "domain name")
        home_dir = resolve_home(home)
        registry = Registry(home_dir)
        if registry.core_fingerprint is None:
            raise RegistryError(f"no trained core in {home_dir}; run `unictr train` first")
        entry = registry.get(name)
        if entry is not None and entry.local and not replace:
            raise RegistryError(f"domain '{name}' already has a local bundle ({entry.bundle}); use --replace")
        if template is not None:
            chosen_template, template_description = _read_template(template, name)
        else:
            chosen_template = entry.template if entry is not None else dataset_template(data)
            template_description = entry.description if entry is not None else ""
        train_rows, valid_rows, test_rows, notes = domain_splits(data, name, seed)
        model = load_core(registry.root / CORE_DIR).to(group.device)
        precision = precisions.resolve(precision, group.device)
    for note in notes:
        echo(note)
    train_rows = subsample(train_rows, max_rows, seed)
    if group.is_main:
        echo_field_usage(field_usage(TemplateSet({name: chosen_template} if chosen_template else {},
                                                 default=model.templates.default), train_rows))
    if entry is not None and entry.has_dsn and entry.compatible and not entry.local:
        secho(f"note: '{name}' is also provided by {entry.source}; the local bundle will take precedence",
              fg=typer.colors.YELLOW, err=True)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, head_lr=(lr / 100, lr), patience=patience, seed=seed)
    processes = f"; {group.world_size} processes ({group.backend})" if group.is_distributed else ""
    echo(f"training a DSN for '{name}' against core {registry.core_fingerprint[:12]} "
         f"({len(train_rows)} train / {len(valid_rows)} valid / {len(test_rows)} held-out rows; "
         f"{'residual' if residual else 'standalone'} DSN; hidden-state cache {'on' if cache else 'off'}; "
         f"{precisions.describe(precision, group.device)}{processes})")
    result = train_domain(model, name, train_rows, valid_rows, test_rows, chosen_template, config, cache=cache,
                          max_cache_gb=max_cache_gb, dist_ctx=group, residual=residual, precision=precision,
                          cache_dir=Path(speed.cache_folder(cache_dir, home_dir)), cache_storage=cache_dtype,
                          on_epoch=lambda record: tqdm.write(epoch_line(record)))
    if not group.is_main:
        return
    result.check_registrable()
    from unictr_core.baselines.floors import floor_scores

    floors = floor_scores(train_rows, valid_rows, test_rows)
    extra = {"description": description or template_description,
             "training": {"data": str(data), "rows": result.rows, "best_epoch": result.best_epoch,
                          "epochs_run": len(result.history) - 1, "hidden_state_cache": cache,
                          "precision": precision,
                          "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
                          "config": config.to_dict(), "history": result.history}}
    stored = dict(result.metrics(), **{f"{floor}_test_auc": m["auc"] for floor, m in floors.items()})
    target = _commit(home_dir, model, name, registry.core_fingerprint, stored, extra, replace)
    test = result.test
    typer.echo(format_table(
        ["held-out rows", "predicted by", "AUC", "logloss"],
        [[test["rows"], f"DSN '{name}'", test["auc"], test["logloss"]],
         [test["rows"], "general network (zero-shot)", test["general_auc"], test["general_logloss"]]]
        + [[test["rows"], f"floor: {floor} (train part)", m["auc"], m["logloss"]] for floor, m in floors.items()]))
    s = result.seconds
    start = " (the untrained start: no epoch beat it on validation)" if result.best_epoch == 0 else ""
    typer.echo(f"best epoch {result.best_epoch}{start} of {len(result.history) - 1}; {s['total']:.1f} s "
               f"(hidden states {s['hidden_states']:.1f} s, training {s['train']:.1f} s, "
               f"evaluation {s['evaluate']:.1f} s)")
    typer.echo(f"domain '{name}' registered: {target}")


def _commit(home_dir, model, name, fingerprint, metrics, extra, replace):
    from unictr_core.registry import commit_bundle

    notes: list[str] = []
    target = commit_bundle(home_dir, model, name, fingerprint, metrics, extra, replace=replace, notes=notes)
    warn(notes)
    return target


@domain_app.command("remove")
@user_errors
def remove(
    name: str = typer.Argument(..., help="The domain whose local bundle to delete."),
    home: Optional[Path] = home_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a domain's local bundle; for a domain of an installed package, explain how to disable it instead."""
    from unictr_core.registry import Registry, removable_entry, remove_domain

    home_dir = resolve_home(home)
    entry = removable_entry(Registry(home_dir), name)
    if not yes:
        typer.confirm(f"Delete the local bundle of domain '{name}' ({entry.bundle})?", abort=True)
    notes: list[str] = []
    remove_domain(home_dir, name, notes=notes)
    warn(notes)
    typer.echo(f"domain '{name}' removed from {home_dir}")
    after = Registry(home_dir).get(name)
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
    from unictr_core.registry import Registry

    registry = Registry(resolve_home(home))
    if as_json:
        typer.echo(json.dumps(registry.to_dict(), indent=2))
        return
    typer.echo(f"core: {registry.core_fingerprint[:12] if registry.core_fingerprint else 'none'} "
               f"({registry.home})")
    typer.echo(format_table(["domain", "source", "status", "compatible", "size", "AUC", "AUC measured on"],
                            _entry_rows(registry)))
    typer.echo("status: ready = DSN for this core; zero-shot = template only, the general network predicts; "
               "incompatible = DSN of another core (predicted zero-shot)")
    for problem in registry.problems:
        typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)


@domain_app.command("show")
@user_errors
def show(
    name: str = typer.Argument(...),
    home: Optional[Path] = home_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Everything the registry knows about one domain."""
    from unictr_core.registry import Registry

    entry = Registry(resolve_home(home)).require(name)
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
    for key, value in entry.metrics.items():
        typer.echo(f"{'metric ' + key + ':':24} {value}")
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
