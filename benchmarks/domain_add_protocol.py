"""Protocol "add a domain nobody trained on": `domain add` against zero-shot, the floors and ID baselines.

For each seed the new domain's DSN is trained against the frozen core exactly as `unictr domain add`
does (nothing is written to the home), and scored on the domain's held-out test rows next to

* the general network's zero-shot prediction of the same rows,
* the count-rule floors (``user_rate``, ``item_rate``; fitted on the same training rows),
* single-domain ID baselines (default ``dcn`` and ``deepfm``) trained on the same training rows with the
  same seed,

each with its test AUC, a bootstrap 95 % interval of that AUC (1,000 resamples of the test rows), logloss,
expected calibration error (ECE, 10 bins) and wall time. One command prints the table::

    python benchmarks/domain_add_protocol.py --home HOME --data DATASET --domain board_games --seeds 0 1 2

HOME holds a trained core (the quickstart's: ``unictr data generate --out DATA``, then ``unictr train --data
DATA --home HOME --tune-layers 0``); DATASET is a dataset folder or a .jsonl/.csv file of the domain.
The same command serves MovieLens ``horror`` (a core trained without it, ``--domain horror``) or a third
Amazon category; on a shared 2-core CPU those take far longer than the built-in domain.

Targets (issue 21): the DSN's mean test AUC >= max(floors, best ID baseline) - 0.005, spread across seeds
<= 0.02, its logloss <= zero-shot's, `domain add` <= 120 s for about 2,000 training rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ZERO_SHOT = "zero-shot (general network)"
DSN = "added DSN"
UNCALIBRATED = "added DSN before calibration"


def scored(labels, probs, seconds: float, dsn_probs=None) -> dict:
    """AUC with its bootstrap interval, logloss, ECE, seconds; with ``dsn_probs`` also the DSN's paired AUC gain
    over these ``probs`` (the same resamples score both)."""
    from unictr_core import metrics

    interval = metrics.auc_interval(labels, probs)
    out = {"auc": metrics.auc(labels, probs), "auc_low": interval[0] if interval else None,
           "auc_high": interval[1] if interval else None, "logloss": metrics.logloss(labels, probs),
           "ece": metrics.ece(labels, probs), "seconds": seconds}
    gain = None if dsn_probs is None else metrics.paired_auc_gain(labels, dsn_probs, probs)
    if gain is not None:
        out.update(dsn_gain=gain["gain"], dsn_gain_low=gain["low"], dsn_gain_high=gain["high"])
    return out


def add_once(args, seed: int) -> dict:
    """One `domain add` training (not committed) with ``seed``: {model name: scores} on the test rows."""
    from unictr_core import DomainAddOptions, DomainData, workflows
    from unictr_core.config import DOMAIN_ADD_DEFAULTS, domain_add_head_lr
    from unictr_core.modeling.predict import predict_samples
    from dataclasses import replace

    tick = time.perf_counter()
    config = replace(DOMAIN_ADD_DEFAULTS, seed=seed, precision="fp32")
    plan = workflows.plan_domain_add(args.home, args.domain, DomainData(args.data, max_rows=args.max_rows), config,
                                     replace=True)
    planned = time.perf_counter() - tick
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.standalone:
        config = replace(config, dsn="standalone")
    if args.lr is not None:
        config = replace(config, head_lr=domain_add_head_lr(args.lr))
    if args.weight_decay is not None:
        config = replace(config, weight_decay=args.weight_decay)
    if not args.dsn_shrinkage:
        config = replace(config, dsn_shrinkage=False)
    options = DomainAddOptions(progress=False, stats=args.stats, ids=args.dsn_ids)
    result = workflows.train_dsn(plan, config, options)
    added = time.perf_counter() - tick
    labels = [s.label for s in plan.test_rows]
    predictions = predict_samples(plan.model, plan.test_rows)
    out = {DSN: scored(labels, predictions.probs, added),
           ZERO_SHOT: scored(labels, predictions.general_probs, 0.0, predictions.probs)}
    calibration = getattr(result, "calibration", None)
    if calibration:  # the same DSN without its Platt scaling: invert p = sigmoid(a * z + b)
        logits = np.log(predictions.probs) - np.log1p(-predictions.probs)
        raw = (logits - calibration["bias"]) / calibration["scale"]
        out[UNCALIBRATED] = scored(labels, 1 / (1 + np.exp(-raw)), added)
    out[DSN].update(best_epoch=result.best_epoch, epochs_run=len(result.history) - 1, plan_seconds=planned,
                    history=result.history, rows=result.rows, shrinkage=result.shrinkage.get("scale"))
    return out, plan, predictions.probs


def baselines_once(plan, names: list[str], seed: int, dsn_probs) -> dict:
    """The floors and the ID baselines ``names``, fitted on the plan's training rows (``seed``); each with the
    DSN's (``dsn_probs``) paired AUC gain over it."""
    from unictr_core.baselines.registry import baselines
    from unictr_core.baselines.trainer import fit_baseline
    from unictr_core.config import BaselineSettings

    labels = [s.label for s in plan.test_rows]
    registered = baselines()
    floors = [n for n, info in registered.items() if info.category.startswith("floor")]
    out = {}
    for name in floors + names:
        tick = time.perf_counter()
        fitted = fit_baseline(name, registered[name].factory, plan.train_rows, plan.valid_rows,
                              BaselineSettings(seed=seed))
        probs = fitted.predict(plan.test_rows)
        label = f"floor: {name}" if name in floors else f"ID baseline: {name}"
        out[label] = scored(labels, probs, time.perf_counter() - tick, dsn_probs)
    return out


def summary(runs: list[dict]) -> dict:
    """Per model: means over the seeds (and the AUC spread: max - min)."""
    names = list(runs[0])
    out = {}
    for name in names:
        per_seed = [r[name] for r in runs]
        aucs = [m["auc"] for m in per_seed]
        keys = ["auc", "auc_low", "auc_high", "logloss", "ece", "seconds"]
        keys += [k for k in ("dsn_gain", "dsn_gain_low", "dsn_gain_high") if all(k in m for m in per_seed)]
        out[name] = {key: float(np.mean([m[key] for m in per_seed])) for key in keys}
        out[name]["spread"] = float(max(aucs) - min(aucs))
        out[name]["per_seed_auc"] = aucs
    return out


def targets(table: dict) -> dict:
    references = {n: m["auc"] for n, m in table.items() if n.startswith(("floor", "ID baseline"))}
    bar = max(references.values()) - 0.005
    dsn, zero = table[DSN], table[ZERO_SHOT]
    return {"auc_bar": bar, "auc_ok": dsn["auc"] >= bar, "spread_ok": dsn["spread"] <= 0.02,
            "logloss_ok": dsn["logloss"] <= zero["logloss"], "seconds_ok": dsn["seconds"] <= 120.0}


def _gain(m: dict) -> str:
    """The DSN's AUC gain over a model with its paired interval, each a mean over the seeds."""
    if "dsn_gain" not in m:
        return "-"
    return f"{m['dsn_gain']:+.4f} [{m['dsn_gain_low']:+.3f}, {m['dsn_gain_high']:+.3f}]"


def render(table: dict, checks: dict, seeds: list[int]) -> str:
    from unictr_core.data.tables import format_table

    rows = [[name, round(m["auc"], 4), f"[{m['auc_low']:.3f}, {m['auc_high']:.3f}]", round(m["spread"], 4),
             " / ".join(f"{a:.4f}" for a in m["per_seed_auc"]), round(m["logloss"], 4), round(m["ece"], 4),
             round(m["seconds"], 1), _gain(m)] for name, m in table.items()]
    text = format_table(["model", "test AUC (mean)", "95% interval", "spread", f"per seed {seeds}", "logloss",
                         "ECE", "wall s", "DSN - model [paired 95%]"], rows)
    return (text + f"\ntargets: DSN AUC >= {checks['auc_bar']:.4f}: {checks['auc_ok']}; spread <= 0.02: "
            f"{checks['spread_ok']}; logloss <= zero-shot: {checks['logloss_ok']}; add <= 120 s: "
            f"{checks['seconds_ok']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--domain", default="board_games")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baselines", nargs="*", default=["dcn", "deepfm"], help="single-domain ID baselines")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: domain add's)")
    parser.add_argument("--max-rows", type=int, default=None, help="at most N training rows")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: domain add's)")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: domain add's)")
    parser.add_argument("--no-stats", dest="stats", action="store_false",
                        help="the DSN without count statistics (domain add --no-stats)")
    parser.add_argument("--standalone", action="store_true", help="the paper's DSN from scratch (domain add "
                        "--standalone) instead of a residual one")
    parser.add_argument("--no-dsn-ids", dest="dsn_ids", action="store_false",
                        help="leave the DSN's own ID embeddings at zero (domain add --no-dsn-ids)")
    parser.add_argument("--no-dsn-shrinkage", dest="dsn_shrinkage", action="store_false",
                        help="keep the DSN's correction as trained (domain add --no-dsn-shrinkage)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared CPU)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        scores, plan, dsn_probs = add_once(args, seed)
        scores.update(baselines_once(plan, args.baselines, seed, dsn_probs))
        runs.append(scores)
        kept = scores[DSN]["shrinkage"]
        print(f"seed {seed}: DSN {scores[DSN]['auc']:.4f} (best epoch {scores[DSN]['best_epoch']}"
              f"{'' if kept is None else f', correction kept {kept:g}'}), zero-shot "
              f"{scores[ZERO_SHOT]['auc']:.4f}, {scores[DSN]['seconds']:.1f} s", flush=True)
    table = summary(runs)
    checks = targets(table)
    rows = runs[0][DSN]["rows"]
    print(f"domain '{args.domain}': {rows['train']} train / {rows['valid']} valid / {rows['test']} test rows; "
          f"{torch.get_num_threads()} torch thread(s); wall s of the DSN: plan + train + evaluate")
    print(render(table, checks, args.seeds))
    report = {"domain": args.domain, "seeds": args.seeds, "rows": rows, "table": table, "targets": checks,
              "runs": runs}
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
