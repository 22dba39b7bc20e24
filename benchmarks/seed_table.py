"""Mean and spread over seeds of `unictr benchmark` runs: mean test AUC over the trained domains, the zero-shot
AUC of each held-out domain (the head chosen on validation), training seconds, per model::

    python benchmarks/seed_table.py RUN/seed0/benchmark.json RUN/seed1/benchmark.json ...

Runs must use the same data and options apart from the seed (checked: the rows used must be equal).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f} (min {min(values):.4f}, max {max(values):.4f})"


def table(reports: list[dict]) -> str:
    rows_used = {json.dumps(r["dataset"]["rows_used"], sort_keys=True) for r in reports}
    if len(rows_used) > 1:
        raise SystemExit("the runs did not use the same rows: not comparable")
    models = list(dict.fromkeys(m for r in reports for m in r["models"]))
    holdout = list(dict.fromkeys(d for r in reports for m in r["models"].values() for d in m.get("zero_shot", {})))
    lines = [f"{len(reports)} seed(s): " + ", ".join(str(r["options"]["seed"]) for r in reports),
             "| model | mean test AUC | " + " | ".join(f"zero-shot {d}" for d in holdout) + " | train s |",
             "|---|---|" + "---|" * len(holdout) + "---|"]
    for name in models:
        runs = [r["models"][name] for r in reports if name in r["models"]]
        aucs = [m["mean_auc"] for m in runs if m.get("mean_auc") is not None]
        zero = [spread([m["zero_shot"][d]["auc"] for m in runs
                        if m.get("zero_shot", {}).get(d, {}).get("auc") is not None]) for d in holdout]
        seconds = [m["train_seconds"] for m in runs if m.get("train_seconds") is not None]
        wall = f"{statistics.fmean(seconds):.0f}" if seconds else "-"
        lines.append(f"| {name} | {spread(aucs)} | " + " | ".join(zero) + f" | {wall} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([json.loads(Path(p).read_text()) for p in sys.argv[1:]]))
