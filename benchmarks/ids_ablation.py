"""Ablation of ID-aware Uni-CTR: text only vs IDs in the DSNs only vs IDs in the DSNs and the general network.

Every variant is trained by ``unictr benchmark``'s own code on the same rows,
split, label, seed and settings, next to the floors (``user_rate``,
``item_rate``) and PLE from the same run. The dataset is a dataset folder
(e.g. ``unictr data prepare movielens --out /tmp/ml``), optionally narrowed to
a few domains (``--domains``), to users with training rows (``--known-users``:
the situation where user embeddings can pay off; MovieLens is split by time,
so most later rows come from new users) or to the ``--top-users`` N of them
with the most validation and test rows::

    python benchmarks/ids_ablation.py --data /tmp/ml --domains action,comedy,drama --holdout horror --known-users \\
        --max-rows 150 --max-eval-rows 60 --epochs 2 --max-length 64 --dsn residual --threads 1

Prints one table (mean test AUC over the trained domains with the DSNs and with
the general network, zero-shot AUC per held-out domain, training seconds) and
writes every run's full report as JSON under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {"none": "text only (the paper)", "dsn": "IDs in the DSNs only", "all": "IDs in DSNs + general network"}


def narrowed(data: Path, domains: list[str], holdout: list[str], top_users: int, known_users: bool,
             out: Path) -> Path:
    """``data`` restricted to ``domains`` + ``holdout`` and, with ``known_users``, to users with training rows
    (with ``top_users``, only the N of them with the most valid + test rows)."""
    from unictr_core.data.dataset import load_dataset, write_dataset

    dataset = load_dataset(data)
    keep_domains = set(domains) | set(holdout)
    unknown = sorted(keep_domains - set(dataset.domains))
    if unknown:
        raise SystemExit(f"--domains/--holdout: {', '.join(unknown)} not in {data} ({', '.join(dataset.domains)})")
    # the split is by time, so many active training users have no later rows: rank users by their valid + test
    # rows (the scarce part) among those who also have training rows
    trained = {s.user_id for s in dataset.train if s.domain in set(domains)}
    counts = Counter(s.user_id for s in dataset.valid + dataset.test
                     if s.domain in keep_domains and s.user_id in trained)
    users = {u for u, _ in counts.most_common(top_users)} if top_users else trained

    def keep(part):
        return [s for s in part
                if s.domain in keep_domains and (not (known_users or top_users) or s.user_id in users)]

    who = (f"the {len(users)} users with the most valid + test rows among those with training rows" if top_users
           else "users with training rows" if known_users else "all users")
    meta = {"name": f"{dataset.meta.get('name') or data.name} (narrowed)", "holdout_domains": list(holdout),
            "provenance": f"{data}: domains {sorted(keep_domains)}, {who}"}
    write_dataset(out, keep(dataset.train), keep(dataset.valid), keep(dataset.test), meta)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--domains", default=None, help="comma-separated training domains (default: all)")
    parser.add_argument("--holdout", default=None, help="comma-separated held-out domains (default: the dataset's)")
    parser.add_argument("--top-users", type=int, default=0, help="keep only N users, those with the most valid + test "
                        "rows (0: all)")
    parser.add_argument("--known-users", action="store_true", help="keep only users with training rows in the "
                        "training domains (valid / test rows of users the models never saw are dropped)")
    parser.add_argument("--modes", default="none,dsn,all", help="ID modes to compare (none, dsn, all)")
    parser.add_argument("--dsn", default=None, help="DSN kind: residual or standalone (default: unictr train's)")
    parser.add_argument("--max-rows", type=int, default=None, help="training rows per domain")
    parser.add_argument("--max-eval-rows", type=int, default=None, help="validation and test rows per domain")
    parser.add_argument("--epochs", type=int, default=2, help="Uni-CTR epochs")
    parser.add_argument("--baseline-epochs", type=int, default=30, help="PLE epoch cap (early stopping)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--tune-layers", default="all", help="LoRA in the top K layers (0: frozen, cached backbone; "
                        "all: every layer, the paper)")
    parser.add_argument("--batch-size", type=int, default=32, help="Uni-CTR batch size")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("ids-ablation-results"))
    return parser.parse_args()


def chosen_data(args: argparse.Namespace, tmp: Path) -> Path:
    """``--data``, or its narrowed copy under ``tmp`` with ``--domains``, ``--top-users`` or ``--known-users``."""
    from unictr_core.data.dataset import load_dataset

    if not (args.domains or args.top_users or args.known_users):
        return args.data
    source = load_dataset(args.data)
    domains = args.domains.split(",") if args.domains else \
        [d for d in source.domains if d not in source.holdout_domains]
    holdout = args.holdout.split(",") if args.holdout else source.holdout_domains
    return narrowed(args.data, domains, holdout, args.top_users, args.known_users, tmp / "data")


def run_mode(args: argparse.Namespace, data: Path, mode: str) -> tuple[dict, list]:
    """``unictr benchmark``'s run of the floors, PLE and Uni-CTR with IDs ``mode``; its report (written under
    ``--out``) and the table's row of its Uni-CTR."""
    from unictr_core.baselines import BaselineSettings
    from unictr_core.benchmark import BenchmarkOptions, run_benchmark, write_outputs
    from unictr_core.config import TrainConfig
    from unictr_core.fit.report import fmt

    options = BenchmarkOptions(models=["user_rate", "item_rate", "ple", "unictr"], max_rows=args.max_rows,
                               max_eval_rows=args.max_eval_rows, epochs=args.baseline_epochs,
                               uni_epochs=args.epochs, uni_backbone=args.backbone,
                               uni_max_length=args.max_length, uni_dsn=args.dsn or TrainConfig.dsn,
                               uni_ids=mode, seed=args.seed, uni_batch_size=args.batch_size,
                               uni_tune_layers=None if args.tune_layers == "all" else int(args.tune_layers),
                               holdout=args.holdout.split(",") if args.holdout else None,
                               baseline=BaselineSettings(batch_size=64, patience=3))
    report = run_benchmark(data, options, log=lambda m: print(m, file=sys.stderr, flush=True))
    write_outputs(report, args.out / mode)
    uni = report["models"]["unictr"]
    holdout = report["dataset"]["holdout_domains"]
    return report, [MODES[mode], fmt(uni["mean_auc"]), fmt(uni["mean_general_auc"]),
                    *[fmt(uni["zero_shot"][d]["auc"]) for d in holdout], f"{uni['train_seconds']:.0f}"]


def report_table(args: argparse.Namespace, first: dict, rows: list[list]) -> None:
    """Add the rows of the floors and PLE of the ``first`` run, print the table and write it under ``--out``."""
    from unictr_core.fit.report import fmt, format_table

    holdout = first["dataset"]["holdout_domains"]
    for name in ("user_rate", "item_rate", "ple"):
        r = first["models"][name]
        rows.append([f"{name} (same rows)", fmt(r["mean_auc"]), "-",
                     *[fmt(r["zero_shot"][d]["auc"]) for d in holdout], f"{r['train_seconds']:.0f}"])
    used = first["dataset"]["rows_used"]
    print(f"ID ablation on {args.data} ({', '.join(first['dataset']['joint_domains'])}; held out "
          f"{', '.join(holdout) or 'none'}); rows used: train {sum(used['train'].values())}, "
          f"valid {sum(used['valid'].values())}, test {sum(used['test'].values())}")
    print(format_table(["Uni-CTR variant / model", "mean test AUC (DSN)", "mean test AUC (general)",
                        *[f"zero-shot {d}" for d in holdout], "train s"], rows))
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in
                                                                               vars(args).items()}}, indent=2))


def main() -> None:
    args = parse_args()

    import torch

    torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {', '.join(bad)}; known: {', '.join(MODES)}")
    with tempfile.TemporaryDirectory() as tmp:
        data = chosen_data(args, Path(tmp))
        rows, reports = [], {}
        for mode in modes:
            reports[mode], row = run_mode(args, data, mode)
            rows.append(row)
        report_table(args, reports[modes[0]], rows)


if __name__ == "__main__":
    main()
