"""Does bf16 move the AUC? The quickstart's steps in fp32 and in bf16, on the same rows, for several seeds.

For each seed and precision: train a core on the built-in data (frozen backbone, ``--tune-layers 0``),
score the test split (the held-out ``board_games`` zero-shot), add a DSN for ``board_games`` against the
frozen core and score its held-out rows. Every run sees the same rows, split, labels and features; only
the precision (and the seed) changes. Prints a table and the paired differences bf16 - fp32 next to the
spread between seeds of the same precision (the noise)::

    python benchmarks/precision_auc.py --seeds 0,1 --epochs 3 [--data DIR] [--out results.json]

On a CPU without AVX512-BF16/AMX, bf16 is emulated: its AUCs are what a native CPU computes up to
rounding order, but its wall time says nothing about native speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEW_DOMAIN = "board_games"


def run_once(data: Path, home: Path, precision: str, seed: int, epochs: int) -> dict:
    """Train, evaluate, add ``board_games`` and evaluate it, all at ``precision``; returns the test AUCs."""
    from unictr_core import DomainAddOptions, workflows
    from unictr_core.config import DOMAIN_ADD_DEFAULTS, ModelConfig, TrainConfig
    from unictr_core.data.data_io import read_samples

    start = time.perf_counter()
    plan = workflows.plan_training(data, home, ModelConfig(tune_layers=0),
                                   TrainConfig(epochs=epochs, seed=seed, precision=precision))
    workflows.train_home(plan, progress=False)
    trained = time.perf_counter() - start
    test = read_samples(data / "test.jsonl", require_labels=True)
    report = workflows.evaluate(home, test, precision=precision).report
    aucs = {d: m["auc"] for d, m in report["domains"].items()}
    add_start = time.perf_counter()
    add_config = replace(DOMAIN_ADD_DEFAULTS, seed=seed, precision=precision)
    add_plan = workflows.plan_domain_add(home, NEW_DOMAIN, data, add_config)
    added = workflows.add_domain(add_plan, add_config, DomainAddOptions(progress=False))
    return {"precision": precision, "seed": seed, "test_auc": aucs,
            "trained_mean_auc": sum(aucs[d] for d in plan.domains) / len(plan.domains),
            "zero_shot_auc": aucs.get(NEW_DOMAIN), "added_auc": added.training.test["auc"],
            "train_seconds": round(trained, 1), "add_seconds": round(time.perf_counter() - add_start, 1),
            "domains": plan.domains}


def spread(values: list[float]) -> float:
    return max(values) - min(values) if values else float("nan")


def summary(runs: list[dict], seeds: list[int]) -> str:
    from unictr_core.data.tables import format_table

    domains = runs[0]["domains"]
    headers = ["precision", "seed"] + domains + ["mean (trained)", f"{NEW_DOMAIN} zero-shot",
                                                  f"{NEW_DOMAIN} added", "train s", "add s"]
    rows = [[r["precision"], r["seed"]] + [r["test_auc"][d] for d in domains]
            + [r["trained_mean_auc"], r["zero_shot_auc"], r["added_auc"], r["train_seconds"], r["add_seconds"]]
            for r in runs]
    lines = [format_table(headers, rows), ""]
    by = {(r["precision"], r["seed"]): r for r in runs}
    for key in ("trained_mean_auc", "zero_shot_auc", "added_auc"):
        diffs = [by["bf16", s][key] - by["fp32", s][key] for s in seeds]
        noise = [spread([by[p, s][key] for s in seeds]) for p in ("fp32", "bf16")]
        lines.append(f"{key}: bf16 - fp32 per seed {', '.join(f'{d:+.4f}' for d in diffs)}; "
                     f"spread between seeds: fp32 {noise[0]:.4f}, bf16 {noise[1]:.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: the built-in data, generated)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    from unictr_core.modeling.precision import cpu_bf16_flags

    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from unictr_core.data.synthetic import write_builtin_dataset

            data = Path(tmp) / "data"
            write_builtin_dataset(data)
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                runs.append(run_once(data, Path(tmp) / f"home-{precision}-{seed}", precision, seed, args.epochs))
                print(json.dumps(runs[-1]), flush=True)
    print(f"CPU: {platform.processor() or platform.machine()}; native bf16 flags: {cpu_bf16_flags() or 'none'}; "
          f"torch threads {torch.get_num_threads()}")
    print(summary(runs, seeds))
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
