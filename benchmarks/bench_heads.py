"""How close the heads' training step comes to this machine's matmul throughput, token-level against summaries.

Joint training with a frozen backbone (``--tune-layers 0``) spends its epochs in the heads (ladder blocks, gates,
towers of the general network and every DSN) over cached hidden states. This benchmark caches the same rows once
per head input (every token, the paper; ``--token-summary K`` vectors per layer), then times optimiser steps
(forward, backward, AdamW) at several batch sizes, counts each step's floating-point operations
(``torch.utils.flop_counter``), and compares the achieved GFLOP/s with the matmul GFLOP/s this CPU reaches on
the heads' own shapes, measured in the same run (fp32, and bf16 where asked)::

    python benchmarks/bench_heads.py --data /tmp/unictr-bench/movielens-genre --max-rows 200 --ids all \
        --summaries 0,8 --batch-sizes 128,512 --threads 2

Every setting trains on the same rows with the same seed and the same model; only the heads' input differs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_gflops(shapes, dtype, seconds: float = 1.0) -> float:
    """The best GFLOP/s of ``a @ b`` over ``shapes`` ((m, k, n) triples) in ``dtype``."""
    import torch

    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            runs += 1
        best = max(best, 2 * m * k * n * runs / (time.perf_counter() - started) / 1e9)
    return best


def build(args, summary: int):
    from unictr_core.config import ModelConfig, TrainConfig
    from unictr_core.data.dataset import load_dataset, subsample_per_domain
    from unictr_core.fit.training import build_model
    from unictr_core.modeling.hidden_cache import build_cache
    from unictr_core.modeling.predict import tokenize_samples
    from unictr_core.store.registry import templates_for

    dataset = load_dataset(args.data)
    holdout = set(dataset.holdout_domains)
    rows = subsample_per_domain([s for s in dataset.train if s.domain not in holdout], args.max_rows, 0)
    domains = sorted({s.domain for s in rows})
    config = ModelConfig(backbone=args.backbone, tune_layers=0, ids=args.ids, token_summary=summary,
                         max_length=args.max_length)
    model = build_model(config, domains, templates_for(domains, default=dataset.template), seed=0,
                        residual_dsns=True)
    encoded = tokenize_samples(model, rows)
    started = time.perf_counter()
    cache = build_cache(model, encoded, model.cached_layers(), config=TrainConfig(), head_inputs=True)
    return model, encoded, cache, time.perf_counter() - started


def time_steps(model, encoded, cache, batch_size: int, steps: int, precision: str) -> tuple[float, float]:
    """(samples/s, GFLOP per sample) of optimiser steps over ``cache``; precision fp32 or bf16 autocast."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from unictr_core.fit.loop import ctr_loss

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()

    def step(rows):
        batch = encoded.batch(rows)
        states, mask = cache.batch(rows)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            output = model(None, mask, batch.domains, batch.ids, hidden_states=states)
        loss = ctr_loss(output.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def rows():
        return torch.randperm(len(encoded), generator=generator)[:batch_size].tolist()

    with FlopCounterMode(display=False) as counter:
        step(rows())
    flops = counter.get_total_flops() / batch_size
    for _ in range(2):
        step(rows())
    started = time.perf_counter()
    for _ in range(steps):
        step(rows())
    return batch_size * steps / (time.perf_counter() - started), flops / 1e9


def main(argv=None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="A prepared dataset folder.")
    parser.add_argument("--max-rows", type=int, default=200, help="Training rows per domain (seeded).")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--ids", default="all", choices=["none", "dsn", "all"])
    parser.add_argument("--summaries", default="0,8", help="Token summary sizes to compare (0: every token).")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--steps", type=int, default=10, help="Timed optimiser steps per setting.")
    parser.add_argument("--precisions", default="fp32", help="fp32 and/or bf16 (autocast).")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    shapes = [(4096, 384, 512), (4096, 512, 256), (4096, 384, 96), (4096, 96, 384)]
    peak = {p: matmul_gflops(shapes, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    lines = [f"{'summary':>8} {'batch':>6} {'prec':>5} {'samples/s':>10} {'GFLOP/sample':>13} {'GFLOP/s':>8} "
             f"{'% of matmul':>11} {'cache GiB/10k rows':>19} {'cache fill s':>13}"]
    base = None
    for summary in [int(x) for x in args.summaries.split(",")]:
        model, encoded, cache, fill = build(args, summary)
        per_10k = cache.nbytes / len(encoded) * 10_000 / 2**30
        for batch_size in [int(x) for x in args.batch_sizes.split(",")]:
            for precision in precisions:
                rate, gflop = time_steps(model, encoded, cache, batch_size, args.steps, precision)
                base = base or rate
                lines.append(f"{summary:>8} {batch_size:>6} {precision:>5} {rate:>10.0f} {gflop:>13.4f} "
                             f"{rate * gflop:>8.1f} {100 * rate * gflop / peak[precision]:>10.1f}% "
                             f"{per_10k:>19.3f} {fill:>13.1f}")
        del model, encoded, cache
    print(f"matmul peak on the heads' shapes: " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peak.items()))
    print("\n".join(lines))
    print(f"rows: {args.max_rows} per domain of {args.data}; backbone {args.backbone} frozen; ids {args.ids}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
