"""The prediction fast path against the model as `unictr predict` ran it before issue 24, same run.

    python benchmarks/bench_fast_path.py --home HOME --rows ROWS.jsonl [--modes fp32,fp32-merged,bf16,bf16-merged]

Modes (each on the same rows, batch ``--batch-size``, the model loaded beforehand; loading is not timed):

* ``fp32``: the unprepared model (LoRA as separate adapters), fp32: the reference;
* ``fp32-merged``: :func:`unictr_core.modeling.fast_path.prepare_for_prediction` at fp32 (LoRA merged,
  ``torch.inference_mode``): what `predict`, `evaluate`, `rank` and `serve` run now at fp32;
* ``bf16``: the unprepared model under bf16 autocast (the former `--precision bf16`);
* ``bf16-merged``: prepared at bf16 (LoRA merged into bf16 weights, no autocast).

Rounds alternate ``--repeats`` times and the fastest of each mode is reported (a shared CPU's speed drifts).
bf16 is only fast where the CPU has AVX512-BF16 or AMX (or on CUDA); the header says whether this one does.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("fp32", "fp32-merged", "bf16", "bf16-merged")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--rows", type=Path, required=True, help="samples to score (.jsonl/.csv)")
    parser.add_argument("--max-rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown or "fp32" not in modes:
        parser.error(f"--modes: choose from {', '.join(MODES)}, fp32 (the reference) included")

    import torch

    torch.set_num_threads(args.threads)
    from unictr_core.data.data_io import read_samples
    from unictr_core.data.tables import format_table
    from unictr_core.modeling.fast_path import prepare_for_prediction
    from unictr_core.modeling.precision import cpu_bf16_flags
    from unictr_core.modeling.predict import predict_samples
    from unictr_core.store.loading import load_model

    samples = read_samples(args.rows)[: args.max_rows]
    base, _ = load_model(args.home, domains=sorted({s.domain for s in samples}))
    models = {"fp32": (base, "fp32"), "bf16": (base, "bf16")}
    for mode in ("fp32-merged", "bf16-merged"):
        models[mode] = (prepare_for_prediction(copy.deepcopy(base), mode.split("-")[0]), None)
    rounds: dict[str, list[float]] = {mode: [] for mode in modes}
    probs = {}
    for mode in modes:  # warm-up, untimed
        predict_samples(models[mode][0], samples[:4], args.batch_size, precision=models[mode][1])
    for _ in range(args.repeats):
        for mode in modes:
            model, precision = models[mode]
            started = time.perf_counter()
            probs[mode] = predict_samples(model, samples, args.batch_size, precision=precision).probs
            rounds[mode].append(time.perf_counter() - started)
    flags = ", ".join(cpu_bf16_flags()) or "none: bf16 is emulated here, its speed is not what native bf16 gives"
    print(f"{args.home}: {len(samples)} rows, batch {args.batch_size}, {args.threads} torch thread(s); "
          f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs: timings are noisy); "
          f"native bf16 CPU flags: {flags}")
    print(f"best of {args.repeats} alternating rounds; seconds of every round: "
          + "; ".join(f"{mode} " + ", ".join(f"{v:.2f}" for v in values) for mode, values in rounds.items()))
    best = {mode: min(values) for mode, values in rounds.items()}
    rows = [[mode, round(best[mode], 3), round(len(samples) / best[mode], 1), f"{best['fp32'] / best[mode]:.2f}x",
             f"{float(np.abs(probs[mode] - probs['fp32']).max()):.1e}"] for mode in modes]
    print(format_table(["mode", "seconds", "rows/s", "vs fp32", "max |Δp| vs fp32"], rows))
    return {"rounds": rounds}


if __name__ == "__main__":
    main()
