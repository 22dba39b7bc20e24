"""Numeric precision of the model's arithmetic (fp32 or bf16 autocast) and int8 serving.

* ``fp32``: everything in float32 (the reference).
* ``bf16``: ``torch.autocast`` with bfloat16 on the device: matrix products run
  in bf16, weights, optimiser state and the loss stay float32. Fast where the
  hardware has bf16 units (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX);
  elsewhere it runs, emulated, and is usually *slower* than fp32.
* ``auto``: for prediction (``predict``, ``evaluate``, ``serve``), bf16 where the hardware supports it,
  fp32 otherwise; for training (``train``, ``domain add``) on a CPU always fp32, on a CUDA GPU with bf16
  bf16. On CPUs bf16 training was measured no faster for the default frozen-backbone heads, and its
  AUCs differ from fp32's about as much as another seed's (docs, "Numbers and hardware";
  ``benchmarks/precision_auc.py``).

The default of every command and of the Python API is :data:`unictr_core.config.DEFAULT_PRECISION`.

Predictions are deterministic for a fixed precision on a fixed machine, so a
domain's predictions stay bit-identical across adding or removing other domains
in bf16 as in fp32.

:func:`quantize_int8` turns the frozen backbone's linear layers into dynamic
int8 ones (CPU serving: ``unictr predict|evaluate --quantize int8``).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch
from torch import nn

# the settings' names live with the configs
from unictr_core.config import FILL_PRECISIONS, PRECISIONS, QUANTIZE  # noqa: F401

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU flags (from /proc/cpuinfo) that give native bf16 arithmetic; empty if none or unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_bf16_flags())


def resolve(precision: str, device: torch.device, quantized: bool = False, training: bool = False) -> str:
    """``fp32`` or ``bf16`` for ``precision``; int8 serving runs in fp32.

    ``auto`` picks bf16 where ``device`` has native bf16, except for ``training`` on a CPU (fp32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if quantized:
        if precision == "bf16":
            raise ValueError("--quantize int8 computes in int8/fp32; it cannot be combined with --precision bf16")
        return "fp32"
    if precision == "auto":
        if training and device.type == "cpu":
            return "fp32"
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def resolve_fill(fill_precision: str, training_precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: the frozen backbone's forward over the rows a hidden-state cache holds.

    ``same``: ``training_precision`` (already resolved); else ``fill_precision`` resolved as for prediction (the
    backbone is frozen, so the fill is inference: ``auto`` is bf16 where ``device`` has native bf16).
    """
    if fill_precision not in FILL_PRECISIONS:
        raise ValueError(f"fill precision must be one of {', '.join(FILL_PRECISIONS)}, got '{fill_precision}'")
    return training_precision if fill_precision == "same" else resolve(fill_precision, device)


def describe(precision: str, device: torch.device) -> str:
    """A short note on how ``precision`` (already resolved) runs on ``device``, for the user."""
    if precision == "fp32":
        return "fp32"
    native = bf16_supported(device)
    return "bf16 autocast" + ("" if native else " (emulated: this CPU has no AVX512-BF16/AMX, usually slower)")


def autocast(precision: str, device: torch.device):
    """The context the forward pass (and the loss) runs in for ``precision`` (``fp32`` or ``bf16``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"resolve the precision first (fp32 or bf16), got '{precision}'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def quantize_int8(model) -> None:
    """Serve ``model`` (a :class:`~unictr_core.modeling.model.UniCTRModel`) with a dynamic-int8 backbone, in place.

    LoRA is merged into the backbone's weights first, then every ``nn.Linear`` of
    the backbone becomes a dynamically quantized int8 linear layer (weights int8
    per output channel, activations quantized on the fly). The heads stay fp32.
    CPU only; the model can no longer be trained or saved afterwards.
    """
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("--quantize int8 is dynamic int8 for the CPU; run it without CUDA (UNICTR_DEVICE=cpu)")
    backbone = model.backbone
    if hasattr(backbone, "merge_and_unload"):  # a peft model: fold LoRA into the base weights
        backbone = backbone.merge_and_unload()
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        model.backbone = quantize_dynamic(backbone.eval(), {nn.Linear}, dtype=torch.qint8)
    model.quantized = True
