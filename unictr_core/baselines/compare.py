"""``unictr domain add --compare MODELS``: quick ID baselines trained on the add's own rows, next to the DSN.

Each named baseline (any registered one: ``dcn``, ``deepfm``, ..., the count rules ``user_rate`` and
``item_rate``; see :mod:`unictr_core.baselines`) is fitted on exactly the add's training part, early-stopped
on its validation part and scored on its held-out test part, the same rows the DSN was trained, chosen and
scored on. Each gets its test AUC with the bootstrap 95 % interval (:func:`unictr_core.metrics.auc_interval`,
the same resamples as the DSN's interval), logloss, ECE and training seconds.

The comparison is a report only: it runs after the DSN is trained, with the torch random state
forked, and never changes what is registered (the bundle's weights and predictions are the same with and
without it). Its result is stored in the bundle's metrics under :data:`METRICS_KEY`; ``unictr domain add``
and ``unictr domain show`` print it as a table (``unictr_cli.domain_cmds``).

In the layer order this is a baselines module (it trains baselines): ``unictr_core.workflows.add_domain``
calls it after :mod:`unictr_core.fit.domain_training` has trained the DSN.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Optional, Sequence

from unictr_core.config import BaselineSettings

if TYPE_CHECKING:
    from unictr_core.data.schema import Sample

METRICS_KEY = "compare"  # where the comparison sits in a bundle's metrics (domain.yaml; read by `domain show`)


def check_models(names: Optional[Sequence[str]], option: str = "--compare") -> list[str]:
    """``names`` without repeats, in order; ValueError naming each unknown name and every valid one.

    Cheap (no model is built): called while planning the add, before any training.
    """
    if not names:
        return []
    from unictr_core.baselines.registry import baselines

    wanted = [str(n).strip() for n in names if str(n).strip()]
    known = baselines()
    unknown = [n for n in wanted if n not in known]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"{option}: unknown model{plural} {', '.join(repr(n) for n in unknown)}; valid: "
                         f"{', '.join(known) or 'none (no baseline is registered)'}")
    return list(dict.fromkeys(wanted))


def compare_baselines(names: Sequence[str], train: Sequence["Sample"], valid: Sequence["Sample"],
                      test: Sequence["Sample"], seed: int = BaselineSettings.seed,
                      settings: Optional[BaselineSettings] = None, log=None, dsn_probs=None) -> dict:
    """Fit each of ``names`` on ``train`` (early stopping on ``valid``) and score it on ``test``.

    Returns the plain (YAML/JSON-friendly) record stored in the bundle's metrics::

        {"rows": {"train": N, "valid": M, "test": K}, "seed": seed, "settings": {...},
         "models": {name: {"category", "test_auc", "test_auc_interval", "test_logloss", "test_ece",
                           "valid_auc", "epochs", "train_seconds"[, "dsn_gain"]} or {"category", "error"}}}

    ``dsn_probs``: the DSN's probabilities of the ``test`` rows (in their order); each model then also gets
    ``dsn_gain``: the DSN's AUC minus the model's on the same rows, with its paired bootstrap 95 % interval
    (:func:`unictr_core.metrics.paired_auc_gain`: each resample scores both), {"gain", "low", "high"}.

    A model that fails is recorded with its error and the others still run (the DSN is trained already and a
    comparison must not lose it). The torch random state is restored afterwards.
    """
    import torch

    from unictr_core import metrics
    from unictr_core.baselines.registry import baselines
    from unictr_core.baselines.trainer import fit_baseline

    names = check_models(names)
    settings = settings or BaselineSettings(seed=seed)
    registered = baselines()
    labels = [int(s.label) for s in test]
    out: dict = {"rows": {"train": len(train), "valid": len(valid), "test": len(test)}, "seed": settings.seed,
                 "settings": _plain(asdict(settings)), "models": {}}
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        for name in names:
            info = registered[name]
            started = time.perf_counter()
            try:
                fitted = fit_baseline(name, info.factory, train, valid, settings, log=log)
                probs = fitted.predict(test)
            except Exception as exc:  # noqa: BLE001 - recorded and shown; the DSN must still be registered
                out["models"][name] = {"category": info.category, "error": f"{type(exc).__name__}: {exc}"}
                continue
            seconds = time.perf_counter() - started
            interval = metrics.auc_interval(labels, probs)
            valid_aucs = [v for v in fitted.best_valid_auc.values() if v is not None]
            out["models"][name] = {
                "category": info.category,
                "test_auc": metrics.auc(labels, probs),
                "test_auc_interval": None if interval is None else [float(interval[0]), float(interval[1])],
                "test_logloss": metrics.logloss(labels, probs),
                "test_ece": metrics.ece(labels, probs),
                "valid_auc": valid_aucs[0] if len(valid_aucs) == 1 else None,
                "epochs": max(fitted.epochs_run.values(), default=0),
                "train_seconds": round(seconds, 2),
            }
            if dsn_probs is not None:
                gain = metrics.paired_auc_gain(labels, dsn_probs, probs)
                out["models"][name]["dsn_gain"] = None if gain is None else {k: float(v) for k, v in gain.items()}
    return out


def _plain(value):
    """Tuples as lists (YAML ``safe_dump`` writes no tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
