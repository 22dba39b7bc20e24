"""Speed-up of `unictr domain add` from caching the frozen backbone's hidden states.

The same new-domain DSN is trained twice against the same frozen core, on the
same rows, with the same seed and the same number of epochs (early stopping
off, so both do identical work): once with the hidden states computed once and
reused every epoch (the default), once running the backbone on every batch of
every epoch (``--no-cache``). Prints a table and, with ``--out``, writes JSON::

    python benchmarks/bench_domain_add.py --home HOME --data DATASET_DIR --domain board_games --epochs 5

``--home`` needs a trained core (``unictr train``); ``--data`` is a dataset
folder (its train/valid/test rows of ``--domain``) or a .jsonl/.csv file.
Nothing is written to the home.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_once(plan, epochs: int, batch_size: int, seed: int, cache: bool) -> dict:
    """One `domain add` training (nothing committed) on the rows of ``plan``, against a freshly loaded core."""
    from dataclasses import replace

    from unictr_core import DomainAddOptions, workflows
    from unictr_core.config import TrainConfig
    from unictr_core.store.artifact import load_core
    from unictr_core.store.layout import CORE_DIR
    from unictr_core.store.snapshots import snapshot

    plan = replace(plan, model=load_core(snapshot(plan.home) / CORE_DIR))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs + 1, seed=seed)
    result = workflows.train_dsn(plan, config, DomainAddOptions(cache=cache, progress=False))
    epochs_run = len(result.history)
    return {"cache": cache, "epochs": epochs_run, "seconds": result.seconds,
            "seconds_per_epoch": result.seconds["train"] / epochs_run, "cache_mib": result.cache_bytes / 2**20,
            "test_auc": result.test["auc"], "zero_shot_auc": result.test["general_auc"],
            "valid_auc": result.valid_auc, "rows": result.rows}


def warm_up(model, samples) -> None:
    """One untimed backbone pass, so one-off start-up costs do not land on the first timed mode."""
    import torch

    from unictr_core.modeling.predict import tokenize_samples

    batch = tokenize_samples(model, samples).batch(list(range(len(samples))))
    with torch.no_grad():
        model.encode(batch.input_ids, batch.attention_mask)


def table(runs: list[dict]) -> str:
    from unictr_core.fit.report import format_table

    rows = []
    for r in runs:
        s = r["seconds"]
        rows.append(["cached hidden states" if r["cache"] else "backbone every epoch", r["epochs"],
                     round(s["hidden_states"], 1), round(s["train"], 1), round(r["seconds_per_epoch"], 2),
                     round(s["evaluate"], 1), round(s["total"], 1), round(r["cache_mib"], 1), r["test_auc"]])
    return format_table(["mode", "epochs", "backbone pass s", "train s", "s/epoch", "eval s", "total s",
                         "cache MiB", "test AUC"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--domain", default="board_games")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-rows", type=int, default=None, help="at most N training rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode, in alternating order; the fastest "
                        "run of each mode is reported (the CPU may be shared)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); "
                        "on a CPU shared with other jobs, 1 thread avoids oversubscription stalls")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from unictr_core import DomainData, TrainConfig, workflows

    # the rows, template and core `unictr domain add` would use (fp32, so both modes compute alike)
    plan = workflows.plan_domain_add(args.home, args.domain, DomainData(args.data, max_rows=args.max_rows),
                                     TrainConfig(seed=args.seed, precision="fp32"), replace=True)
    train, valid, test = plan.train_rows, plan.valid_rows, plan.test_rows
    warm_up(plan.model, train[:8])
    all_runs: list[dict] = []
    for repeat in range(args.repeats):
        for cache in ((True, False) if repeat % 2 == 0 else (False, True)):
            all_runs.append(run_once(plan, args.epochs, args.batch_size, args.seed, cache))
    cached, live = (min((r for r in all_runs if r["cache"] == mode), key=lambda r: r["seconds"]["total"])
                    for mode in (True, False))
    runs = [cached, live]
    speedup_total = live["seconds"]["total"] / cached["seconds"]["total"]
    speedup_train = (live["seconds"]["train"] + live["seconds"]["evaluate"]) / (
        cached["seconds"]["hidden_states"] + cached["seconds"]["train"] + cached["seconds"]["evaluate"])
    print(f"domain '{args.domain}': {len(train)} train / {len(valid)} valid / {len(test)} test rows, "
          f"{args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
          f"{platform.processor() or platform.machine()}")
    print(table(runs))
    print(f"speed-up of the cache: {speedup_total:.2f}x end to end (tokenising and model loading excluded), "
          f"{speedup_train:.2f}x for backbone passes + training + evaluation; "
          f"|test AUC difference| = {abs(cached['test_auc'] - live['test_auc']):.2e}")
    report = {"domain": args.domain, "epochs": args.epochs, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "runs": runs,
              "all_runs": all_runs,
              "speedup_total": speedup_total, "speedup_train": speedup_train}
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
