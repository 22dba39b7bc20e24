"""Throughput of the speed settings: --tune-layers all / 2 / 0 x fp32 / bf16 for training, fp32 / bf16 / int8
for prediction, on the same rows, in one run, with ratios against full-LoRA fp32 measured in the same run.

Every training setting trains Uni-CTR on the same training rows (the dataset's joint domains, ``--max-rows``
per domain, seeded), with the same seed and epochs, early stopping off, validates on the same rows and is
scored on the same test rows (its own precision). Each setting runs in a fresh child process, so its peak RSS
is its own. Prediction is measured on the full-LoRA fp32 model, tokenisation excluded, on the test rows::

    python benchmarks/bench_throughput.py --data data/builtin --max-rows 200 --epochs 2 --threads 1

Columns: the one-time cost of caching the hidden states below the cut (s), its size in GiB per 10,000 rows
(fp16 or bf16 storage, the prompts of this data at ``--max-length``), training samples/s per epoch (optimiser
steps only, after the cache), the ratio to full-LoRA fp32, mean test AUC of the DSNs over the joint domains,
the general network's zero-shot AUC on the holdout domains, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_SETTINGS = [("all", "fp32"), ("all", "bf16"), ("2", "fp32"), ("2", "bf16"), ("0", "fp32"), ("0", "bf16")]
PREDICT_SETTINGS = ["fp32", "bf16", "int8"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def load_rows(args):
    from unictr_core.data.dataset import load_dataset, subsample_per_domain

    dataset = load_dataset(args.data)
    holdout = set(dataset.meta.get("holdout_domains") or [])
    joint = sorted({s.domain for s in dataset.train} - holdout)
    train = subsample_per_domain([s for s in dataset.train if s.domain in joint], args.max_rows, args.seed)
    valid = subsample_per_domain([s for s in dataset.valid if s.domain in joint], args.valid_rows, args.seed)
    test = subsample_per_domain(dataset.test, args.test_rows, args.seed)
    return joint, sorted(holdout), train, valid, test


def scores(samples, predictions, joint, holdout) -> dict:
    from unictr_core.modeling.predict import domain_metrics

    per_domain = domain_metrics(samples, predictions)
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return {"test_auc": mean([per_domain[d]["auc"] for d in joint if d in per_domain]),
            "zero_shot_auc": mean([per_domain[d]["general_auc"] for d in holdout if d in per_domain]),
            "per_domain": {d: per_domain[d]["auc"] for d in per_domain}}


def worker(args, tune: str, precision: str) -> dict:
    """Train one setting; for full-LoRA fp32 also measure prediction in fp32, bf16 and int8."""
    import torch

    from unictr_core.config import ModelConfig, TrainConfig
    from unictr_core.fit.training import train_unictr
    from unictr_core.modeling import precision as precisions
    from unictr_core.modeling.predict import tokenize_samples, predict_encoded
    from unictr_core.store.registry import templates_for

    torch.set_num_threads(args.threads)
    joint, holdout, train, valid, test = load_rows(args)
    model_config = ModelConfig(backbone=args.backbone, max_length=args.max_length,
                               tune_layers=None if tune == "all" else int(tune))
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1,
                               seed=args.seed, domains=joint, precision=precision, cache_dir=args.cache_dir)
    result = train_unictr(train, valid, model_config, train_config, templates=templates_for(joint + holdout),
                          progress=False)
    model = result.model
    encoded = tokenize_samples(model, test)
    out = {"tune_layers": tune, "precision": precision, "rows": len(train),
           "epoch_seconds": result.epoch_seconds,
           "train_samples_per_s": len(train) / (sum(result.epoch_seconds) / len(result.epoch_seconds)),
           "cache_seconds": result.cache.get("seconds", 0.0),
           "cache_gib_per_10k": (result.cache["bytes"] / result.cache["rows"] * 10_000 / 2**30
                                 if result.cache else 0.0),
           "cache_layers": result.cache.get("layers", []), "cache_storage": result.cache.get("storage"),
           "best_epoch": result.best_epoch, "seconds": result.seconds,
           **scores(test, predict_encoded(model, encoded, precision=precision), joint, holdout)}
    if tune == "all" and precision == "fp32":
        out["predict"] = {}
        for mode in PREDICT_SETTINGS:
            if mode == "int8":
                precisions.quantize_int8(model)
            started = time.perf_counter()
            predictions = predict_encoded(model, encoded, args.eval_batch_size,
                                          precision="fp32" if mode == "int8" else mode)
            seconds = time.perf_counter() - started
            out["predict"][mode] = {"samples_per_s": len(test) / seconds, "seconds": seconds,
                                    **scores(test, predictions, joint, holdout)}
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def run_setting(args, tune: str, precision: str) -> dict:
    command = [sys.executable, __file__, "--worker", f"{tune}:{precision}", *sys.argv[1:]]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"setting tune-layers {tune} / {precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(runs: list[dict]) -> str:
    from unictr_core.fit.report import format_table

    reference = runs[0]
    base_train, base_auc = reference["train_samples_per_s"], reference["test_auc"]
    rows = []
    for r in runs:
        rows.append([f"train, tune-layers {r['tune_layers']}", r["precision"],
                     f"{r['cache_seconds']:.1f}" if r["cache_layers"] else "-",
                     f"{r['cache_gib_per_10k']:.2f}" if r["cache_layers"] else "-",
                     f"{r['train_samples_per_s']:.1f}", f"{r['train_samples_per_s'] / base_train:.2f}x",
                     r["test_auc"], f"{r['test_auc'] - base_auc:+.4f}", r["zero_shot_auc"],
                     f"{r['peak_rss_gb']:.2f}"])
    predicted = reference["predict"]
    for mode, p in predicted.items():
        rows.append(["predict (all-LoRA model)", mode, "-", "-", f"{p['samples_per_s']:.1f}",
                     f"{p['samples_per_s'] / predicted['fp32']['samples_per_s']:.2f}x", p["test_auc"],
                     f"{p['test_auc'] - predicted['fp32']['test_auc']:+.4f}", p["zero_shot_auc"], "-"])
    return format_table(["setting", "precision", "cache s (once)", "cache GiB/10k rows", "samples/s",
                         "vs all fp32", "test AUC", "AUC diff", "zero-shot AUC", "peak RSS GB"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (e.g. `unictr data generate`)")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--max-rows", type=int, default=200, help="training rows per joint domain")
    parser.add_argument("--valid-rows", type=int, default=50, help="validation rows per domain")
    parser.add_argument("--test-rows", type=int, default=None, help="test rows per domain (default all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per setting")
    parser.add_argument("--settings", default=",".join(f"{t}:{p}" for t, p in TRAIN_SETTINGS),
                        help="tune-layers:precision pairs; the first is the reference (default all:fp32 first)")
    parser.add_argument("--cache-dir", default=None, help="folder for a spilled cache (default: temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        tune, precision = args.worker.split(":")
        print(json.dumps(worker(args, tune, precision)))
        return {}
    settings = [tuple(s.split(":")) for s in args.settings.split(",")]
    if settings[0] != ("all", "fp32"):
        raise SystemExit("--settings must start with all:fp32 (the reference of the ratios)")
    started = time.perf_counter()
    runs = []
    for tune, precision in settings:
        runs.append(run_setting(args, tune, precision))
        print(f"tune-layers {tune} / {precision}: {runs[-1]['train_samples_per_s']:.1f} samples/s", file=sys.stderr)
    from unictr_core.modeling.precision import cpu_bf16_flags

    report = {"runs": runs, "seconds": time.perf_counter() - started, "threads": args.threads,
              "machine": {"processor": platform.processor() or platform.machine(),
                          "cpu_bf16_flags": list(cpu_bf16_flags())},
              "settings": {k: str(v) for k, v in vars(args).items() if k != "worker"}}
    print(f"{runs[0]['rows']} training rows, {args.epochs} epochs, {args.threads} torch thread(s), "
          f"backbone {args.backbone}, CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}; "
          f"{report['seconds']:.0f} s in all")
    print(table(runs))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
