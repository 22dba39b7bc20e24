"""Several processes for ``train`` and ``domain add``: the torchrun options, the relaunch, the process group."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import typer

from unictr_cli.common import USER_ERRORS, fail
from unictr_core.config import DEFAULT_DIST_TIMEOUT_S, DIST_TIMEOUT_ENV

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
                        f"collective before giving up with an error (default ${DIST_TIMEOUT_ENV} or "
                        f"{DEFAULT_DIST_TIMEOUT_S:.0f}).", rich_help_panel="Distributed")


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


def relaunch_under_torchrun(ctx: typer.Context, options) -> None:
    """Run the current command again in ``options.nproc_per_node`` processes under torchrun, then exit."""
    from unictr_core.fit import distributed

    if distributed.under_torchrun():
        raise ValueError("--nproc-per-node/--nnodes/--node-rank/--rdzv-* start torchrun, but this process already "
                         f"runs under torchrun (RANK={os.environ.get('RANK')}): leave them out here")
    code = distributed.launch(options, "unictr_cli.main", forwarded_arguments(ctx))
    if code != 0:
        fail(f"distributed run failed (torchrun exit code {code}); the failing rank's error is printed above")
    raise typer.Exit(0)


def launch_options(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id):
    """The torchrun launch the user asked for, or None when none of the launch options was given."""
    if all(v is None for v in (nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)):
        return None
    if nproc_per_node is None:
        raise ValueError("--nnodes/--node-rank/--rdzv-endpoint/--rdzv-id need --nproc-per-node "
                         "(processes per machine)")
    from unictr_core.fit.distributed import LaunchOptions

    options = LaunchOptions(nproc_per_node=nproc_per_node, nnodes=nnodes or "1", node_rank=node_rank,
                            rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id)
    options.validate()
    return options


@contextlib.contextmanager
def process_group(timeout_s: Optional[float]) -> Iterator:
    """This process's place in a torchrun job (or a lone process); errors end it with one clear line.

    An error every rank shares (see :func:`unictr_core.fit.distributed.agreement`) is printed by rank 0 only;
    other errors by the rank that met them, prefixed with its rank.
    """
    from unictr_core.fit import distributed
    from unictr_core.fit.distributed import DistributedError

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
