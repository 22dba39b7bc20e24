"""Scaling study: Uni-CTR with backbones of growing size on the same data and split (the paper's RQ3).

Every backbone is trained and scored in its own subprocess (so peak memory is per
backbone and memory is returned between runs), one after the other, on the same
per-domain subsample of the same dataset folder::

    python benchmarks/bench_backbones.py --data DIR --backbones tiny,minilm,mpnet,smollm2 \
        --max-rows 64 --valid-rows 32 --test-rows 100 --out bench.json

``--data`` is a dataset folder (``unictr data generate`` / ``unictr data prepare``);
without it the built-in synthetic dataset is generated into a temporary folder.
``tiny`` is a randomly initialised 4-layer BERT (no language knowledge), the floor
of the scale. Holdout domains are left out, as in ``unictr train``.

Training throughput counts training rows processed over the whole of
``train_unictr`` (model load and the per-epoch validation pass included), so it
understates the pure step rate; inference throughput times the test pass alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _subsample(samples, per_domain: int, seed: int):
    from unictr_core.data.dataset import subsample_per_domain

    return subsample_per_domain(samples, per_domain, seed)


def run_one(args: argparse.Namespace) -> dict:
    """Train and score one backbone in this process; return its measurements."""
    import torch

    from unictr_core.config import ModelConfig, TrainConfig
    from unictr_core.data.dataset import load_dataset
    from unictr_core.fit.training import train_unictr
    from unictr_core.modeling.predict import domain_metrics, mean_auc, predict_samples
    from unictr_core.modeling.tiny import make_tiny_backbone
    from unictr_core.store.registry import templates_for

    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    holdout = set(dataset.meta.get("holdout_domains") or [])
    domains = sorted({s.domain for s in dataset.train} - holdout)
    pick = lambda rows, n: [s for s in _subsample(rows, n, args.seed) if s.domain in domains]  # noqa: E731
    train, valid, test = pick(dataset.train, args.max_rows), pick(dataset.valid, args.valid_rows), \
        pick(dataset.test, args.test_rows)

    backbone = args.one
    with tempfile.TemporaryDirectory() as scratch:
        if backbone == "tiny":
            backbone = str(make_tiny_backbone(Path(scratch) / "tiny", "bert", hidden_size=64, num_layers=4,
                                              extra_texts=[s.title or "" for s in train]))
        model_config = ModelConfig(backbone=backbone, max_length=args.max_length, tower_dims=[128, 64])
        train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                   domains=domains, patience=args.epochs)
        result = train_unictr(train, valid, model_config, train_config, templates=templates_for(domains),
                              progress=False)
        epochs_run = len(result.history)
        started = time.perf_counter()
        predictions = predict_samples(result.model, test, batch_size=args.batch_size)
        infer_seconds = time.perf_counter() - started
    per_domain = domain_metrics(test, predictions)
    model = result.model
    return {
        "backbone": args.one,
        "model_type": model.backbone_info.model_type,
        "layers": model.num_layers,
        "hidden": model.hidden_size,
        "backbone_params": sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" not in n),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_rows": len(train), "valid_rows": len(valid), "test_rows": len(test),
        "epochs_run": epochs_run, "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_s": round(len(train) * epochs_run / result.seconds, 2),
        "infer_samples_per_s": round(len(test) / infer_seconds, 2),
        "test_auc": {d: m["auc"] for d, m in per_domain.items()},
        "test_general_auc": {d: m["general_auc"] for d, m in per_domain.items()},
        "mean_test_auc": mean_auc(per_domain),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def _table(results: list[dict]) -> str:
    from unictr_core.fit.report import format_table

    domains = sorted({d for r in results if "test_auc" in r for d in r["test_auc"]})
    headers = ["backbone", "layers x hidden", "params", *[f"AUC {d}" for d in domains], "mean AUC",
               "train s", "train samp/s", "infer samp/s", "peak RSS GB"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["backbone"], "failed: " + r["error"][-60:]] + ["-"] * (len(headers) - 2))
            continue
        rows.append([r["backbone"], f"{r['layers']}x{r['hidden']}", f"{r['backbone_params'] / 1e6:.0f}M",
                     *[r["test_auc"].get(d) for d in domains], r["mean_test_auc"], f"{r['train_seconds']:.0f}",
                     f"{r['train_samples_per_s']:.1f}", f"{r['infer_samples_per_s']:.1f}", f"{r['peak_rss_gb']:.1f}"])
    return format_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: the built-in synthetic dataset)")
    parser.add_argument("--backbones", default="tiny,minilm,mpnet,smollm2",
                        help="comma-separated: tiny, registered names (add gemma3 to opt in) or model directories")
    parser.add_argument("--max-rows", type=int, default=64, help="training rows per domain")
    parser.add_argument("--valid-rows", type=int, default=32, help="validation rows per domain")
    parser.add_argument("--test-rows", type=int, default=100, help="test rows per domain")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backbone in this process
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        args.result.write_text(json.dumps(run_one(args)), encoding="utf-8")
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        data_label = str(args.data)
        if args.data is None:
            from unictr_core.data.synthetic import write_builtin_dataset

            args.data = Path(scratch) / "synthetic"
            write_builtin_dataset(args.data)
            data_label = "built-in synthetic dataset (seed 0, scale 1)"
        results = []
        for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
            result_file = Path(scratch) / f"{len(results)}.json"
            command = [sys.executable, __file__, "--one", name, "--result", str(result_file), "--data", str(args.data)]
            for option in ("max_rows", "valid_rows", "test_rows", "epochs", "batch_size", "max_length", "seed",
                           "threads"):
                command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
            print(f"== {name}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                      [str(ROOT), os.environ.get("PYTHONPATH", "")])))
            if proc.returncode == 0:
                results.append(json.loads(result_file.read_text(encoding="utf-8")))
            else:
                tail = proc.stdout.strip().splitlines()[-1:] or ["no output"]
                results.append({"backbone": name, "error": tail[0]})
                print(proc.stdout[-3000:], file=sys.stderr)
            print(f"   {time.perf_counter() - started:.0f} s wall", file=sys.stderr, flush=True)
    print(_table(results))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, python {platform.python_version()}"
    print(f"\nmachine: {machine}; data: {data_label}; per domain: {args.max_rows} train / {args.valid_rows} valid / "
          f"{args.test_rows} test rows; epochs {args.epochs}, batch {args.batch_size}, max_length {args.max_length}")
    if args.out is not None:
        report = {"machine": machine, "data": data_label, "command": " ".join(sys.argv),
                  "settings": {k: str(v) for k, v in vars(args).items() if k not in ("one", "result", "data")},
                  "results": results}
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
