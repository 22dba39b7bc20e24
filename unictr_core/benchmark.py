"""``unictr benchmark``: Uni-CTR against the baselines on one dataset folder, like for like.

Every model is trained on the same training rows (the dataset's joint
domains: all but the holdout ones), with the same seed, early-stopped on the
same validation rows and scored on the same test rows. The report holds:

* Table III of the paper: test AUC per domain for every model (the count-rule
  floors of :mod:`unictr_core.baselines.floors` first), the best
  single-domain and best multi-domain baseline marked per domain, and
  Uni-CTR's RelaImpr over every baseline;
* the zero-shot table: each held-out domain scored by models that never saw
  it. A multi-domain baseline answers with the domain head that scores best
  on the held-out domain's *validation* rows; a single-domain baseline with
  its per-domain model chosen the same way; Uni-CTR with its general network;
* per model, training time and prediction throughput (test samples/s,
  feature encoding / tokenisation included), measured in the same run.
"""

from __future__ import annotations

import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from unictr_core import metrics
from unictr_core.baselines import BaselineSettings, baselines, fit_baseline, score_by_domain
from unictr_core.baselines.floors import FLOOR
from unictr_core.baselines.trainer import check_labels
from unictr_core.config import ModelConfig, TrainConfig, joint_head_lr, tune_layers_text
from unictr_core.data.dataset import load_dataset, subsample_per_domain
from unictr_core.data.schema import Sample
from unictr_core.fit.report import fmt, format_table, write_json

UNICTR = "unictr"
SINGLE, MULTI, LLM = "single-domain", "multi-domain", "LLM-based multi-domain"
CATEGORY_ORDER = (FLOOR, SINGLE, MULTI, LLM)
MARKS = {SINGLE: "*", MULTI: "+"}


@dataclass
class BenchmarkOptions:
    models: Optional[list[str]] = None          # None: every registered baseline + unictr
    max_rows: Optional[int] = None              # training rows per domain (random subsample, seeded)
    max_eval_rows: Optional[int] = None         # validation and test rows per domain
    epochs: int = BaselineSettings.epochs       # epoch cap of the baselines
    uni_epochs: Optional[int] = None            # epoch cap of Uni-CTR (default: --epochs)
    uni_backbone: str = ModelConfig.backbone
    uni_batch_size: int = TrainConfig.batch_size
    uni_max_length: int = ModelConfig.max_length
    uni_max_steps: Optional[int] = TrainConfig.max_steps
    uni_dsn: str = TrainConfig.dsn              # DSN kind of Uni-CTR's joint training (TrainConfig.dsn)
    uni_dsn_stats: bool = TrainConfig.dsn_stats  # Uni-CTR's DSNs read count statistics (TrainConfig.dsn_stats)
    uni_lr_schedule: str = TrainConfig.lr_schedule  # Uni-CTR's learning-rate schedule (TrainConfig.lr_schedule)
    uni_head_lr: float = TrainConfig.head_lr[1]  # Uni-CTR's peak head learning rate (config.joint_head_lr)
    uni_dropout: float = ModelConfig.dropout     # Uni-CTR's dropout in the ladder blocks and towers
    uni_ids: str = ModelConfig.ids              # ID embeddings of Uni-CTR (ModelConfig.ids)
    uni_id_history: int = ModelConfig.id_history  # history items Uni-CTR's ID embeddings read (ModelConfig.id_history)
    uni_id_fields: list[str] = field(default_factory=list)  # Uni-CTR's per-field ID slots (ModelConfig.id_fields)
    uni_id_lr_scale: float = TrainConfig.id_lr_scale  # Uni-CTR's ID tables' learning rate / the heads'
    uni_dsn_shrinkage: bool = TrainConfig.dsn_shrinkage  # Uni-CTR's residual DSNs shrunk on validation
    # the frozen backbone's forward over the cached rows (TrainConfig.fill_precision); other than "same", the test
    # rows are predicted in it too (their backbone forward is the same inference)
    uni_fill_precision: str = TrainConfig.fill_precision
    uni_tune_layers: Optional[int] = ModelConfig.tune_layers  # LoRA in the top K layers only; None: every layer
    uni_token_summary: int = ModelConfig.token_summary  # heads read K summary vectors per layer; 0: every token
    seed: int = BaselineSettings.seed           # one seed for every model and the subsampling
    holdout: Optional[list[str]] = None         # None: the dataset's holdout_domains
    baseline: BaselineSettings = field(default_factory=BaselineSettings)


# --------------------------------------------------------------------------- data
def _rows(samples: Sequence[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        out[s.domain] = out.get(s.domain, 0) + 1
    return dict(sorted(out.items()))


def _only(samples: Sequence[Sample], domains: Sequence[str]) -> list[Sample]:
    wanted = set(domains)
    return [s for s in samples if s.domain in wanted]


def resolve_models(requested: Optional[Sequence[str]]) -> list[str]:
    known = baselines()
    names = list(requested) if requested else [*known, UNICTR]
    unknown = [n for n in names if n != UNICTR and n not in known]
    if unknown:
        raise ValueError(f"--models: unknown model(s) {', '.join(unknown)}; known: "
                         f"{', '.join([*known, UNICTR]) or UNICTR}")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------- running
def _scores_dict(scores) -> dict[str, dict]:
    return {d: s.to_dict() for d, s in scores.items()}


def _mean_auc(per_domain: dict[str, dict]) -> Optional[float]:
    values = [m["auc"] for m in per_domain.values() if m.get("auc") is not None]
    return float(np.mean(values)) if values else None


def _pick_head(candidates: dict[str, dict]) -> Optional[str]:
    """The head with the best validation AUC (ties: first in name order); ``None`` if no AUC is defined."""
    scored = [(m["valid_auc"], h) for h, m in sorted(candidates.items()) if m["valid_auc"] is not None]
    if not scored:
        return None
    best = max(a for a, _ in scored)
    return next(h for a, h in scored if a == best)


def _run_baseline(name: str, info, data: dict, options: BenchmarkOptions, log) -> dict:
    settings = BaselineSettings(**{**asdict(options.baseline), "epochs": options.epochs, "seed": options.seed})
    started = time.perf_counter()
    fitted = fit_baseline(name, info.factory, data["train"], data["valid"], settings, log=log)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probs = fitted.predict(data["test"])
    predict_seconds = time.perf_counter() - started
    per_domain = _scores_dict(score_by_domain(data["test"], probs))
    zero_shot = {}
    for held in data["holdout"]:
        valid_h, test_h = data["holdout_valid"][held], data["holdout_test"][held]
        heads = {}
        for head in fitted.domains:
            v = fitted.predict(valid_h, head_domain=head) if valid_h else np.zeros(0)
            t = fitted.predict(test_h, head_domain=head)
            heads[head] = {"valid_auc": metrics.auc([s.label for s in valid_h], v),
                           "test_auc": metrics.auc([s.label for s in test_h], t),
                           "test_logloss": metrics.logloss([s.label for s in test_h], t)}
        chosen = _pick_head(heads)
        picked = heads.get(chosen, {})
        zero_shot[held] = {"head": chosen, "valid_auc": picked.get("valid_auc"), "auc": picked.get("test_auc"),
                           "logloss": picked.get("test_logloss"), "n": len(test_h), "heads": heads}
    return {
        "category": info.category,
        "plugin": info.plugin,
        "settings": asdict(settings),
        "features": fitted.encoder.describe(),
        "train_seconds": train_seconds,
        "epochs_run": fitted.epochs_run,
        "predict_seconds": predict_seconds,
        "predict_rows": len(data["test"]),
        "throughput": len(data["test"]) / predict_seconds if predict_seconds > 0 else None,
        "parameters": int(sum(p.numel() for m in fitted.models.values() for p in m.parameters())),
        "test": per_domain,
        "mean_auc": _mean_auc(per_domain),
        "zero_shot": zero_shot,
    }


def _run_unictr(data: dict, options: BenchmarkOptions, progress: bool) -> dict:
    from unictr_core.fit.training import train_unictr
    from unictr_core.modeling.predict import predict_samples
    from unictr_core.store.registry import templates_for

    model_config = ModelConfig(backbone=options.uni_backbone, max_length=options.uni_max_length, ids=options.uni_ids,
                               tune_layers=options.uni_tune_layers, token_summary=options.uni_token_summary,
                               dropout=options.uni_dropout, id_history=options.uni_id_history,
                               id_fields=list(options.uni_id_fields))
    model_config.validate()
    train_config = TrainConfig(epochs=options.uni_epochs or options.epochs, batch_size=options.uni_batch_size,
                               head_lr=joint_head_lr(options.uni_head_lr),
                               seed=options.seed, domains=list(data["joint"]), max_steps=options.uni_max_steps,
                               dsn=options.uni_dsn, dsn_stats=options.uni_dsn_stats,
                               lr_schedule=options.uni_lr_schedule, fill_precision=options.uni_fill_precision,
                               id_lr_scale=options.uni_id_lr_scale, dsn_shrinkage=options.uni_dsn_shrinkage)
    train_config.validate()
    test_precision = None if train_config.fill_precision == "same" else train_config.fill_precision
    started = time.perf_counter()
    result = train_unictr(data["train"], data["valid"], model_config, train_config,
                          templates=templates_for(data["joint"], default=data["template"]),
                          progress=progress)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predictions = predict_samples(result.model, data["test"], batch_size=train_config.eval_batch_size,
                                  precision=test_precision)
    predict_seconds = time.perf_counter() - started
    per_domain = _scores_dict(score_by_domain(data["test"], predictions.probs))
    general = _scores_dict(score_by_domain(data["test"], predictions.general_probs))
    zero_shot = {}
    for held in data["holdout"]:
        test_h = data["holdout_test"][held]
        held_probs = predict_samples(result.model, test_h, batch_size=train_config.eval_batch_size,
                                     precision=test_precision).general_probs
        labels = [s.label for s in test_h]
        zero_shot[held] = {"head": "general network", "valid_auc": None, "auc": metrics.auc(labels, held_probs),
                           "logloss": metrics.logloss(labels, held_probs), "n": len(test_h)}
    return {
        "category": LLM,
        "plugin": "unictr_core",
        "settings": {"model": result.model.config.to_dict(), "train": train_config.to_dict()},  # id_fields resolved
        "train_seconds": train_seconds,
        "epochs_run": {"*": len(result.history)},
        "best_epoch": result.best_epoch,
        "dsn_shrinkage": result.shrinkage,  # per domain: the share of its DSN's correction kept (chosen on valid)
        "hidden_state_cache": result.cache,  # layers, resolved fill precision, storage, rows, bytes, seconds
        "predict_seconds": predict_seconds,
        "predict_rows": len(data["test"]),
        "throughput": len(data["test"]) / predict_seconds if predict_seconds > 0 else None,
        "parameters": int(sum(p.numel() for p in result.model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in result.model.parameters() if p.requires_grad)),
        "test": per_domain,
        "mean_auc": _mean_auc(per_domain),
        "test_general": general,  # the general network on the same rows (Table III uses the DSNs, as the paper)
        "mean_general_auc": _mean_auc(general),
        "zero_shot": zero_shot,
    }


def _id_fields_text(report: dict) -> str:
    """The per-field ID slots Uni-CTR trained with (``auto`` resolved), from its settings in ``report``."""
    model = ((report["models"].get(UNICTR) or {}).get("settings") or {}).get("model") or {}
    return ", ".join(model.get("id_fields") or []) or "-"


def prepare_data(dataset_dir: Path, options: BenchmarkOptions) -> tuple[dict, dict]:
    """Load, choose joint / held-out domains, subsample; returns (data, dataset description)."""
    dataset = load_dataset(dataset_dir)
    holdout = list(options.holdout) if options.holdout is not None else dataset.holdout_domains
    unknown = [d for d in holdout if d not in dataset.domains]
    if unknown:
        raise ValueError(f"holdout domain(s) {', '.join(unknown)} not in {dataset_dir} "
                         f"(domains: {', '.join(dataset.domains)})")
    joint = [d for d in dataset.domains if d not in set(holdout)]
    train = subsample_per_domain(_only(dataset.train, joint), options.max_rows, options.seed)
    if not train:
        raise ValueError(f"{dataset_dir}: no training rows outside the holdout domains {holdout}")
    joint = sorted({s.domain for s in train})
    valid_all = subsample_per_domain(dataset.valid, options.max_eval_rows, options.seed)
    test_all = subsample_per_domain(dataset.test, options.max_eval_rows, options.seed)
    for name, part in (("train", train), ("valid", valid_all), ("test", test_all)):
        check_labels(part, f"{Path(dataset_dir) / (name + '.jsonl')} (after subsampling)")
    data = {
        "joint": joint, "holdout": holdout, "train": train, "template": dataset.template,
        "valid": _only(valid_all, joint), "test": _only(test_all, joint),
        "holdout_valid": {d: _only(valid_all, [d]) for d in holdout},
        "holdout_test": {d: _only(test_all, [d]) for d in holdout},
    }
    missing_test = [d for d in holdout if not data["holdout_test"][d]]
    if missing_test:
        raise ValueError(f"holdout domain(s) {', '.join(missing_test)} have no test rows in {dataset_dir}")
    described = {
        "path": str(dataset_dir), "name": dataset.meta.get("name"), "joint_domains": joint,
        "holdout_domains": holdout,
        "rows_used": {"train": _rows(train), "valid": _rows(valid_all), "test": _rows(test_all)},
        "rows_available": {"train": _rows(dataset.train), "valid": _rows(dataset.valid),
                           "test": _rows(dataset.test)},
    }
    return data, described


def run_benchmark(dataset_dir: Path, options: BenchmarkOptions, log: Optional[Callable[[str], None]] = None,
                  progress: bool = False) -> dict[str, Any]:
    """Train and score every chosen model; returns the full report (see :func:`format_report`)."""
    names = resolve_models(options.models)
    data, described = prepare_data(Path(dataset_dir), options)
    registered = baselines()
    results: dict[str, dict] = {}
    for name in names:
        if log is not None:
            log(f"training {name} ...")
        if name == UNICTR:
            results[name] = _run_unictr(data, options, progress)
        else:
            results[name] = _run_baseline(name, registered[name], data, options, log if progress else None)
        if log is not None:
            log(f"{name}: mean test AUC {fmt(results[name]['mean_auc'])}, "
                f"trained in {results[name]['train_seconds']:.1f} s")
    report = {
        "dataset": described,
        "options": {**asdict(options), "models": names,
                    "uni_epochs": options.uni_epochs or options.epochs},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "python": platform.python_version(), "machine": platform.machine(),
                        "processor": platform.processor() or None},
        "models": results,
    }
    report["best"] = _best_baselines(results, data["joint"])
    report["rela_impr"] = _rela_impr(results, data["joint"])
    report["zero_shot_rela_impr"] = _zero_shot_rela_impr(results, data["holdout"])
    return report


# ------------------------------------------------------------------ comparisons
def _best_baselines(results: dict[str, dict], domains: Sequence[str]) -> dict[str, dict[str, Optional[str]]]:
    best: dict[str, dict[str, Optional[str]]] = {}
    for category in (SINGLE, MULTI):
        best[category] = {}
        for domain in [*domains, "mean"]:
            scored = [(r["mean_auc"] if domain == "mean" else r["test"].get(domain, {}).get("auc"), name)
                      for name, r in results.items() if r["category"] == category]
            scored = [(a, n) for a, n in scored if a is not None]
            best[category][domain] = max(scored)[1] if scored else None
    return best


def _rela_impr(results: dict[str, dict], domains: Sequence[str]) -> dict[str, dict[str, Optional[float]]]:
    """Uni-CTR's RelaImpr over every baseline, per domain and on the mean AUC."""
    if UNICTR not in results:
        return {}
    uni = results[UNICTR]
    out = {}
    for name, r in results.items():
        if name == UNICTR:
            continue
        out[name] = {d: metrics.rela_impr(uni["test"].get(d, {}).get("auc"), r["test"].get(d, {}).get("auc"))
                     for d in domains}
        out[name]["mean"] = metrics.rela_impr(uni["mean_auc"], r["mean_auc"])
    return out


def _zero_shot_rela_impr(results: dict[str, dict], holdout: Sequence[str]) -> dict[str, dict]:
    if UNICTR not in results:
        return {}
    uni = results[UNICTR]["zero_shot"]
    return {d: {name: metrics.rela_impr(uni[d]["auc"], r["zero_shot"][d]["auc"])
                for name, r in results.items() if name != UNICTR} for d in holdout}


# ---------------------------------------------------------------------- output
def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _ordered(results: dict[str, dict]) -> list[str]:
    return sorted(results, key=lambda n: (CATEGORY_ORDER.index(results[n]["category"]), list(results).index(n)))


def format_report(report: dict[str, Any]) -> str:
    """The plain-text tables: Table III, the zero-shot table, timings, and what was used."""
    results, best = report["models"], report["best"]
    domains = report["dataset"]["joint_domains"]
    has_uni = UNICTR in results
    headers = ["category", "model"]
    for d in [*domains, "mean"]:
        headers += [f"{d} AUC"] + ([f"{d} RelaImpr"] if has_uni else [])
    rows = []
    for name in _ordered(results):
        r = results[name]
        row = [r["category"], name]
        for d in [*domains, "mean"]:
            auc = r["mean_auc"] if d == "mean" else r["test"].get(d, {}).get("auc")
            mark = "".join(m for c, m in MARKS.items() if best.get(c, {}).get(d) == name)
            row.append(fmt(auc) + mark)
            if has_uni:
                row.append("-" if name == UNICTR else _pct(report["rela_impr"][name][d]))
        rows.append(row)
    lines = ["Table III: test AUC per domain" + (" and Uni-CTR's RelaImpr over each model" if has_uni else ""),
             format_table(headers, rows),
             "* best single-domain baseline in the column, + best multi-domain baseline (by test AUC)"
             + ("; RelaImpr = ((AUC_unictr - 0.5) / (AUC_model - 0.5) - 1) x 100%, meaningless where "
                "AUC_model <= 0.5" if has_uni else "")]
    if has_uni:
        for category in (SINGLE, MULTI):
            parts = []
            for d in [*domains, "mean"]:
                name = best[category][d]
                if name is not None:
                    parts.append(f"{d}: {_pct(report['rela_impr'][name][d])} over {name}")
            if parts:
                lines.append(f"Uni-CTR vs best {category}: " + "; ".join(parts))
        uni = results[UNICTR]
        lines.append("Uni-CTR's general network on the same test rows (not in the table): "
                     + ", ".join(f"{d} {fmt(uni['test_general'].get(d, {}).get('auc'))}" for d in domains)
                     + f"; mean {fmt(uni['mean_general_auc'])}")
    lines.append("")
    lines += _format_zero_shot(report)
    lines.append("Timing (same run)")
    lines.append(format_table(
        ["model", "category", "train s", "epochs", "params", "predict samples/s", "test rows"],
        [[n, results[n]["category"], f"{results[n]['train_seconds']:.1f}",
          ",".join(str(v) for v in results[n]["epochs_run"].values()), results[n]["parameters"],
          "-" if results[n]["throughput"] is None else f"{results[n]['throughput']:.0f}", results[n]["predict_rows"]]
         for n in _ordered(results)]))
    lines.append("train s: wall time including feature fitting / backbone loading and per-epoch validation "
                 "(single-domain: all per-domain models); predict samples/s: test rows / wall time, feature "
                 "encoding or tokenisation included")
    lines.append("")
    lines += _format_used(report)
    return "\n".join(lines)


def _format_zero_shot(report: dict[str, Any]) -> list[str]:
    results, holdout = report["models"], report["dataset"]["holdout_domains"]
    if not holdout:
        return ["Zero-shot: skipped (the dataset has no holdout domains; pass --holdout DOMAIN)", ""]
    lines = []
    for d in holdout:
        rows = []
        for name in _ordered(results):
            z = results[name]["zero_shot"][d]
            impr = "-" if name == UNICTR or not report["zero_shot_rela_impr"] else \
                _pct(report["zero_shot_rela_impr"][d][name])
            rows.append([results[name]["category"], name, z["head"] or "-", fmt(z["valid_auc"]), fmt(z["auc"]),
                         fmt(z["logloss"]), impr])
        lines.append(f"Zero-shot on held-out domain '{d}' ({results[next(iter(results))]['zero_shot'][d]['n']} "
                     f"test rows; trained on {', '.join(report['dataset']['joint_domains'])})")
        lines.append(format_table(["category", "model", "head (chosen on valid)", "valid AUC", "test AUC",
                                   "test logloss", "Uni-CTR RelaImpr"], rows))
        lines.append("")
    return lines


def _format_used(report: dict[str, Any]) -> list[str]:
    o, ds, env = report["options"], report["dataset"], report["environment"]
    rows = ds["rows_used"]
    b = o["baseline"]
    lines = [
        f"Used: dataset {ds['path']} ({ds['name'] or 'unnamed'}); seed {o['seed']}; models {', '.join(o['models'])}",
        f"  rows per domain - train {rows['train']}; valid {rows['valid']}; test {rows['test']}",
        f"  subsampling: --max-rows {o['max_rows'] or 'none (all)'} train rows per domain, "
        f"--max-eval-rows {o['max_eval_rows'] or 'none (all)'} valid/test rows per domain",
        f"  baselines: at most {o['epochs']} epochs, Adam lr {b['lr']}, batch {b['batch_size']}, embeddings "
        f"{b['embed_dim']}, hidden {list(b['hidden'])}, dropout {b['dropout']}, early stopping patience "
        f"{b['patience']} on validation AUC",
    ]
    if UNICTR in report["models"]:
        lines.append(f"  Uni-CTR: backbone {o['uni_backbone']}, at most {o['uni_epochs']} epochs, batch "
                     f"{o['uni_batch_size']}, max length {o['uni_max_length']}, {o['uni_dsn']} DSNs"
                     + (" with count statistics" if o.get("uni_dsn_stats") else "")
                     + f", {o.get('uni_lr_schedule', TrainConfig.lr_schedule)} learning rate"
                     + f" (heads' peak {o.get('uni_head_lr', TrainConfig.head_lr[1]):g}), dropout "
                       f"{o.get('uni_dropout', ModelConfig.dropout):g}"
                     + (f", backbone fill and test predictions in {o['uni_fill_precision']}"
                        f" ({(report['models'][UNICTR].get('hidden_state_cache') or {}).get('precision', '-')})"
                        if o.get("uni_fill_precision", "same") != "same" else "")
                     + f", IDs {o['uni_ids']}"
                     + (f" with {o['uni_id_history']} history items" if o.get("uni_id_history") else "")
                     + (f", one ID slot per field ({_id_fields_text(report)})" if o.get("uni_id_fields") else "")
                     + (f", ID tables at {o['uni_id_lr_scale']:g}x the heads' learning rate"
                        if o.get("uni_id_lr_scale", 1.0) != 1.0 else "")
                     + f", token summary {o.get('uni_token_summary') or 'none (every token)'}, "
                     f"LoRA in {tune_layers_text(o.get('uni_tune_layers'))}"
                     + (f", at most {o['uni_max_steps']} steps" if o["uni_max_steps"] else ""))
    lines.append(f"  machine: torch {env['torch']}, {env['threads']} threads, {env['machine']}")
    return lines


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Optional[Path]]:
    """``benchmark.json``, ``benchmark.txt`` and, when matplotlib is importable, ``benchmark.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Optional[Path]] = {"json": out_dir / "benchmark.json", "text": out_dir / "benchmark.txt"}
    paths["chart"] = write_chart(report, out_dir / "benchmark.png")
    report["chart"] = str(paths["chart"]) if paths["chart"] else None
    report["chart_note"] = None if paths["chart"] else "matplotlib is not installed: no PNG chart " \
                                                       "(pip install matplotlib)"
    write_json(paths["json"], _jsonable(report))
    from unictr_core.data.data_io import atomic_write_text

    atomic_write_text(paths["text"], format_report(report) + "\n")
    return paths


def write_chart(report: dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    results = report["models"]
    names = _ordered(results)
    domains = report["dataset"]["joint_domains"]
    holdout = report["dataset"]["holdout_domains"]
    panels = [("test AUC per domain", domains, lambda n, d: results[n]["test"].get(d, {}).get("auc"))]
    if holdout:
        panels.append(("zero-shot test AUC", holdout, lambda n, d: results[n]["zero_shot"][d]["auc"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 + 2.5 * len(domains), 4.5), squeeze=False)
    width = 0.8 / max(len(names), 1)
    for ax, (title, columns, value) in zip(axes[0], panels):
        for i, name in enumerate(names):
            ys = [value(name, d) or 0.0 for d in columns]
            ax.bar([c + i * width for c in range(len(columns))], ys, width, label=name)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(columns))])
        ax.set_xticklabels(columns, rotation=20)
        ax.set_ylim(0.4, 1.0)
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_title(title)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value
