"""Data-parallel training over several processes with PyTorch's own engine (torchrun + DistributedDataParallel).

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address in its environment; :func:`init_from_env` joins the
process group from them. The backend follows the device: ``nccl`` for CUDA,
``gloo`` for the CPU; the device is CUDA when it is available (``UNICTR_DEVICE``
= ``auto``, the default), or what ``UNICTR_DEVICE`` (``cpu`` / ``cuda``) says.
Without those variables (or with one process) nothing is initialised and every
helper here degrades to its single-process meaning, so the trainer has one code
path for both.

Bookkeeping the trainer relies on:

* :func:`shard_of_global_batch` - every rank takes a distinct, interleaved part
  of each global batch; the global batches themselves come from a permutation
  seeded with (seed, epoch), identical on every rank. A rank whose part would be
  empty (a last batch smaller than the world) gets one weight-0 padding row so
  it still joins the gradient all-reduce.
* :func:`eval_shard` / :func:`gather_rows` - validation rows are split with
  ``DistributedSampler`` (which pads with duplicates to equal sizes); the
  gathered rows are put back in their original order and the duplicates dropped.
* :func:`broadcast` - decisions (early stopping) are taken on rank 0 and sent to
  every rank, so all ranks leave the epoch loop together.
* :func:`agreement` - a phase that may fail on only some ranks (reading files
  on several machines) ends with every rank learning who failed and why.
* Every collective runs under a timeout (``UNICTR_DIST_TIMEOUT`` seconds,
  default 600, or the ``timeout_s`` argument); a timeout or a vanished peer
  becomes a :class:`DistributedError` that says so, never a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from unictr_core.config import DEFAULT_DIST_TIMEOUT_S as DEFAULT_TIMEOUT_S, DIST_TIMEOUT_ENV as TIMEOUT_ENV

DEVICE_ENV = "UNICTR_DEVICE"
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(RuntimeError):
    """A failure that concerns the group of processes (another rank failed, a collective timed out)."""

    def __init__(self, message: str, reported_everywhere: bool = False):
        super().__init__(message)
        # True when every rank raises the same error (only rank 0 needs to print it)
        self.reported_everywhere = reported_everywhere


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None  # None: no process group (one process)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """Prefix for messages of this process ('' in a single-process run)."""
        return f"rank {self.rank}/{self.world_size}: " if self.is_distributed else ""

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend or "none", "device": self.device.type}


_ACTIVE: Optional[DistContext] = None


# --------------------------------------------------------------------------- process group
def under_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


def _int_env(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer "
                               "(it is set by torchrun)") from None


def timeout_from_env(timeout_s: Optional[float] = None) -> float:
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_TIMEOUT_S
        try:
            timeout_s = float(raw)
        except ValueError:
            raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if timeout_s <= 0:
        raise DistributedError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
    return float(timeout_s)


def pick_device(local_rank: int = 0) -> torch.device:
    """``UNICTR_DEVICE``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    wanted = os.environ.get(DEVICE_ENV, "auto").strip().lower()
    if wanted not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"{DEVICE_ENV}={wanted!r}: expected auto, cpu or cuda")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DistributedError(f"{DEVICE_ENV}=cuda but PyTorch sees no CUDA device")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(f"local rank {local_rank} has no GPU of its own: this machine has {count}; "
                               f"start at most {count} processes per node (--nproc-per-node)")
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(timeout_s: Optional[float] = None) -> DistContext:
    """Join the process group described by torchrun's environment; a single-process context otherwise."""
    global _ACTIVE
    timeout = timeout_from_env(timeout_s)
    if not under_torchrun() or _int_env("WORLD_SIZE") <= 1:
        _ACTIVE = DistContext(timeout_s=timeout)
        return _ACTIVE
    import torch.distributed as dist

    rank, world, local_rank = _int_env("RANK"), _int_env("WORLD_SIZE"), _int_env("LOCAL_RANK")
    device = pick_device(local_rank)
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout),
                                    **({"device_id": device} if device.type == "cuda" else {}))
        except Exception as exc:  # rendezvous problems: wrong address, a node that never came
            raise DistributedError(f"rank {rank}/{world}: could not join the process group "
                                   f"(backend {backend}, MASTER_ADDR={os.environ.get('MASTER_ADDR')}, "
                                   f"MASTER_PORT={os.environ.get('MASTER_PORT')}): {exc}") from exc
    _ACTIVE = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=device,
                          timeout_s=timeout)
    return _ACTIVE


def active() -> DistContext:
    """The context set up by :func:`init_from_env` in this process, else a single-process one."""
    return _ACTIVE if _ACTIVE is not None else DistContext()


def shutdown(ctx: Optional[DistContext] = None) -> None:
    global _ACTIVE
    ctx = ctx or active()
    if ctx.is_distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _ACTIVE = None


# --------------------------------------------------------------------------- collectives
@contextlib.contextmanager
def collective(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a timeout or a lost peer inside a collective into a clear :class:`DistributedError`."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as exc:
        text = str(exc)
        lowered = text.lower()
        if "timed out" in lowered or "timeout" in lowered:
            reason = (f"no answer from the other ranks within {ctx.timeout_s:g} s (a rank hung or died; "
                      f"raise {TIMEOUT_ENV} / --dist-timeout if a step is legitimately slower)")
        elif any(s in lowered for s in ("connection", "closed", "reset by peer", "broken pipe", "nccl")):
            reason = "lost the connection to another rank (it probably failed; see its message)"
        else:
            raise
        raise DistributedError(f"{ctx.label}{what}: {reason}. Details: {text.splitlines()[0][:300]}") from exc


def broadcast(ctx: DistContext, obj: Any, what: str, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable value)."""
    if not ctx.is_distributed:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.rank == src else None]
    with collective(ctx, what):
        dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def all_reduce_sum(ctx: DistContext, values: Sequence[float], what: str) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not ctx.is_distributed:
        return [float(v) for v in values]
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    with collective(ctx, what):
        dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_gather_objects(ctx: DistContext, obj: Any, what: str) -> list[Any]:
    if not ctx.is_distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    with collective(ctx, what):
        dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def agreement(ctx: DistContext, phase: str) -> Iterator[None]:
    """Run a phase on every rank; if it fails on any rank, every rank raises the same clear error.

    Use it around work that can fail on some ranks only (files missing on one
    machine, out of memory on one GPU), so the others do not wait for a
    collective that never comes.
    """
    error: Optional[BaseException] = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure must reach the other ranks
        error = exc
    if not ctx.is_distributed:
        if error is not None:
            raise error
        return
    reports = all_gather_objects(ctx, None if error is None else f"{type(error).__name__}: {error}",
                                 f"checking that every rank finished {phase}")
    by_message: dict[str, list[int]] = {}
    for rank, msg in enumerate(reports):
        if msg is not None:
            by_message.setdefault(msg, []).append(rank)
    if by_message:
        detail = "; ".join(f"{'rank' if len(ranks) == 1 else 'ranks'} {', '.join(map(str, ranks))} failed: {msg}"
                           for msg, ranks in by_message.items())
        raise DistributedError(f"{phase}: {detail}", reported_everywhere=True) from error


def data_parallel(module: torch.nn.Module, ctx: DistContext, **options: Any) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``module`` in a multi-process run (``options`` go to it), else
    ``module`` itself; the one place either training loop wraps what it trains."""
    if not ctx.is_distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    with collective(ctx, "setting up DistributedDataParallel"):
        return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                       **options)


# --------------------------------------------------------------------------- sharding
def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training rows in ``epoch``: seeded with (seed, epoch), the same on every rank."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator).tolist()


def shard_of_global_batch(rows: Sequence[int], ctx: DistContext) -> tuple[list[int], bool]:
    """This rank's distinct part of a global batch (interleaved); ``(rows, is_padding)``.

    When the global batch has fewer rows than there are ranks, a rank left
    without rows gets the batch's first row as padding: it must be given weight 0.
    """
    mine = list(rows[ctx.rank :: ctx.world_size])
    if mine:
        return mine, False
    if not rows:
        raise ValueError("empty global batch")
    return [rows[0]], True


def owned_rows(n: int, ctx: DistContext) -> list[int]:
    """The training rows this rank keeps for the whole run (every ``world_size``-th row): its cache shard."""
    if n < ctx.world_size:
        raise ValueError(f"{n} training rows cannot be shared by {ctx.world_size} processes")
    return list(range(ctx.rank, n, ctx.world_size))


def owned_part_of_global_batch(rows: Sequence[int], ctx: DistContext, pad_with: Optional[int] = None
                                ) -> tuple[list[int], bool]:
    """This rank's part of a global batch when each rank holds only :func:`owned_rows`; ``(rows, is_padding)``.

    Parts may differ in size between ranks; the loss is normalised by the global
    batch, so the step equals a single process's. A rank that owns no row of the
    batch gets one of its own rows as padding (``pad_with``, default its first):
    it must be given weight 0, and should share a domain with the batch, so that
    no DSN the batch does not use gets a (zero) gradient and an optimiser step.
    """
    mine = [r for r in rows if r % ctx.world_size == ctx.rank]
    if mine:
        return mine, False
    if not rows:
        raise ValueError("empty global batch")
    return [ctx.rank if pad_with is None else pad_with], True


def eval_shard(n: int, ctx: DistContext) -> list[int]:
    """Rows of an evaluation set for this rank, as ``DistributedSampler`` (no shuffle) deals them."""
    if not ctx.is_distributed:
        return list(range(n))
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)
    return list(sampler)


def gather_rows(ctx: DistContext, shard: Sequence[int], values: np.ndarray, n: int, what: str) -> np.ndarray:
    """All ranks' per-row ``values`` ([len(shard), k]) back as one [n, k] array in row order, padding dropped."""
    values = np.asarray(values, dtype=np.float64).reshape(len(shard), -1)
    if not ctx.is_distributed:
        if list(shard) != list(range(n)):
            raise ValueError("single-process gather expects the whole set in order")
        return values
    import torch.distributed as dist

    local = torch.as_tensor(np.column_stack([np.asarray(shard, dtype=np.float64), values]), device=ctx.device)
    parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
    with collective(ctx, what):
        dist.all_gather(parts, local)
    # DistributedSampler deals position p of the padded list to rank p % W as its (p // W)-th row
    dealt = torch.stack(parts, dim=1).reshape(-1, local.shape[1]).cpu().numpy()
    kept = dealt[:n]  # what follows position n is padding (duplicates of the first rows)
    if not np.array_equal(kept[:, 0], np.arange(n)):
        raise DistributedError(f"{what}: gathered rows are not in the expected order; the validation "
                               "shards of the ranks do not match (different data on different machines?)")
    return kept[:, 1:]


# --------------------------------------------------------------------------- launching torchrun
@dataclass
class LaunchOptions:
    nproc_per_node: int
    nnodes: str = "1"
    node_rank: Optional[int] = None
    rdzv_endpoint: Optional[str] = None
    rdzv_id: Optional[str] = None

    def validate(self) -> None:
        if self.nproc_per_node < 1:
            raise ValueError(f"--nproc-per-node must be >= 1, got {self.nproc_per_node}")
        parts = str(self.nnodes).split(":")
        if len(parts) > 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise ValueError(f"--nnodes must be N or MIN:MAX with positive integers, got '{self.nnodes}'")
        several = str(self.nnodes) != "1"
        if several and not self.rdzv_endpoint:
            raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (an address of the first machine "
                             "that every machine can reach)")
        if self.node_rank is not None and self.node_rank < 0:
            raise ValueError(f"--node-rank must be >= 0, got {self.node_rank}")
        if self.node_rank is not None and not self.rdzv_endpoint:
            raise ValueError("--node-rank needs --rdzv-endpoint HOST:PORT of the machine with node rank 0")


def torchrun_command(options: LaunchOptions, module: str, args: Sequence[str],
                     python: Optional[str] = None) -> list[str]:
    """``python -m torch.distributed.run ... -m module args``.

    One machine without an endpoint: ``--standalone``. With ``--node-rank``: the
    static rendezvous (fixed node ranks, the endpoint is node 0's address). Else
    the c10d rendezvous at the endpoint (node ranks assigned on arrival).
    """
    options.validate()
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(options.nproc_per_node),
           "--nnodes", str(options.nnodes)]
    if options.rdzv_endpoint is None:
        cmd.append("--standalone")
    elif options.node_rank is not None:
        cmd += ["--rdzv-backend", "static", "--rdzv-endpoint", options.rdzv_endpoint,
                "--node-rank", str(options.node_rank)]
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", options.rdzv_endpoint,
                "--rdzv-id", options.rdzv_id or "unictr"]
    return [*cmd, "-m", module, *args]


def launch(options: LaunchOptions, module: str, args: Sequence[str]) -> int:
    """Run ``module args`` under torchrun; returns torchrun's exit code."""
    import subprocess

    cmd = torchrun_command(options, module, args)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # torchrun would pin every worker to 1 thread
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // options.nproc_per_node))
    print(f"launching: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
