"""Options of the speed settings: ``--tune-layers``, ``--token-summary``, ``--precision``, ``--quantize`` and the hidden-state cache."""

from __future__ import annotations

from typing import Optional

import typer

from unictr_core.config import (DEFAULT_PRECISION, FILL_PRECISIONS, MAX_TOKEN_SUMMARY, PRECISIONS, QUANTIZE,
                                ModelConfig, TrainConfig)

PANEL = "Speed"

# minilm (6 layers x 384) on the built-in data at --max-length 128: 100 tokens per prompt on average, fp16
# storage, 0.72 GiB per cached layer per 10,000 rows (benchmarks/bench_throughput.py measures it for any data)
CACHE_SIZES = ("tune-layers 0 caches 3 layers, about 2.2 GiB per 10,000 rows; 2: 2 layers, 1.4 GiB; "
               "4: 1 layer, 0.7 GiB")


def tune_layers_option():
    return typer.Option("all", "--tune-layers", metavar="all|K", rich_help_panel=PANEL, help=(
        "LoRA in which transformer layers: 'all' (every layer, the paper; default), K (only the top K layers), "
        "0 (frozen backbone, heads only). Below the top K nothing changes, so those hidden states are computed "
        "once and reused every epoch (a hidden-state cache, fp16/bf16, unpadded). With minilm at the default "
        f"--max-length: {CACHE_SIZES}."))


def token_summary_option(flag: str = "--token-summary"):
    return typer.Option(ModelConfig.token_summary, flag, min=0, max=MAX_TOKEN_SUMMARY, metavar="K", rich_help_panel=PANEL,
                        help=(
        "The heads read each layer's tokens summarised into K vectors (the mean of the prompt's tokens and the "
        "means of K-1 consecutive parts of it) instead of every token (0, the paper). With --tune-layers 0 the "
        "hidden-state cache then grows with rows, not rows x tokens (K/100 of the token cache on 100-token "
        "prompts), and every head step is as many times cheaper."))


def parse_tune_layers(value: str) -> Optional[int]:
    """``all`` -> None (every layer), else a number of layers >= 0."""
    if value.strip().lower() == "all":
        return None
    try:
        tuned = int(value)
    except ValueError:
        raise ValueError(f"--tune-layers: expected 'all' or a number of layers >= 0, got '{value}'") from None
    if tuned < 0:
        raise ValueError(f"--tune-layers: expected 'all' or a number of layers >= 0, got {tuned}")
    return tuned


def precision_option():
    return typer.Option(DEFAULT_PRECISION, "--precision", metavar="|".join(PRECISIONS), rich_help_panel=PANEL, help=(
        "Arithmetic: fp32 (default: the same numbers from the CLI, the Python API and the server), or bf16 "
        "autocast (fast on CUDA and on CPUs with AVX512-BF16 or AMX; emulated and slower elsewhere). auto: bf16 "
        "for prediction where the hardware has it; for training on a CPU always fp32 (measured: no faster, and "
        "AUCs as far from fp32's as another seed). Predictions are bit-identical across adding/removing domains at the same precision "
        "on the same machine."))


def fill_precision_option():
    return typer.Option(TrainConfig.fill_precision, "--fill-precision", metavar="|".join(FILL_PRECISIONS),
                        rich_help_panel=PANEL, help=(
        "The frozen backbone's forward when it fills the hidden-state cache (--tune-layers below all): same (as "
        "--precision; default), fp32, bf16, or auto (bf16 where the hardware has it: the fill is inference, the "
        "heads still train in --precision). Measured on an Intel Xeon with AMX: bf16 fills 2.9x faster, the "
        "summaries within 0.5 % of fp32's (benchmarks/bench_fill.py)."))


def quantize_option():
    return typer.Option("none", "--quantize", metavar="|".join(QUANTIZE), rich_help_panel=PANEL, help=(
        "int8: dynamic int8 of the backbone's linear layers (LoRA merged in first) for CPU serving; computes in "
        "fp32 otherwise. benchmarks/bench_throughput.py measures its speed and AUC against fp32."))


def max_cache_gb_option():
    return typer.Option(TrainConfig.max_cache_gb, "--max-cache-gb", min=0.0, rich_help_panel=PANEL, help=(
        "Hidden-state cache kept in RAM (on a GPU: on the device while it fits); beyond it, the rest goes to a "
        "memory-mapped file in --cache-dir."))


def cache_dtype_option():
    return typer.Option(TrainConfig.cache_dtype, "--cache-dtype", metavar="auto|fp16|bf16|fp32", rich_help_panel=PANEL, help=(
        "Storage of cached hidden states. auto: bf16 for decoders and bf16 runs, else fp16 (half of fp32's "
        "bytes); fp32 for exact comparisons."))


def cache_dir_option():
    return typer.Option(None, "--cache-dir", rich_help_panel=PANEL, show_default=False, help=(
        "Folder for the memory-mapped part of the hidden-state cache (default: the home). The file is deleted "
        "as soon as it is mapped, so nothing is left behind."))
