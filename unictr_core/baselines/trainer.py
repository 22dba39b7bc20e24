"""The baselines' use of the one trainer (:func:`unictr_core.fit.loop.run_epochs`): Adam + BCE, early stopping
on validation AUC, seeded.

Single-domain models are trained once per training domain on that domain's
rows; multi-domain models once on all training rows, with per-domain heads.
Features are fitted on the training split only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from unictr_core import metrics
from unictr_core.baselines.base import BaselineModel
from unictr_core.baselines.features import EncodedData, FeatureEncoder
from unictr_core.config import BaselineSettings  # noqa: F401 - re-exported (its home is unictr_core.config)
from unictr_core.data.schema import DataError, Sample
from unictr_core.fit.loop import Evaluation, bce, optimiser_step, run_epochs

ALL_DOMAINS = "*"


@dataclass
class DomainScore:
    auc: Optional[float]
    logloss: Optional[float]
    n: int
    positives: int

    def to_dict(self) -> dict:
        return {"auc": self.auc, "logloss": self.logloss, "n": self.n, "positives": self.positives}


@dataclass
class FittedBaseline:
    """Trained model(s) plus the encoder fitted on train; ``models`` keyed by domain (or ``"*"``)."""

    name: str
    multi_domain: bool
    encoder: FeatureEncoder
    models: dict[str, BaselineModel]
    settings: BaselineSettings
    train_seconds: float = 0.0
    epochs_run: dict[str, int] = field(default_factory=dict)
    best_valid_auc: dict[str, Optional[float]] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return list(self.encoder.domains)

    def predict(self, samples: Sequence[Sample], head_domain: Optional[str] = None,
                batch_size: int = 2048) -> np.ndarray:
        """P(click) per sample, using each sample's own domain head/model, or ``head_domain``'s for all."""
        if head_domain is not None and head_domain not in self.domains:
            raise ValueError(f"{self.name}: no head for domain '{head_domain}' (trained on {self.domains})")
        if not samples:
            return np.zeros(0, dtype=np.float64)
        data = self.encoder.transform(samples)
        if head_domain is not None:
            heads = np.full(len(data), self.domains.index(head_domain), dtype=np.int64)
        else:
            unknown = sorted({s.domain for s, d in zip(samples, data.domain) if d < 0})
            if unknown:
                raise ValueError(f"{self.name}: domain(s) {unknown} were not in training; pass head_domain "
                                 f"to score them with one of {self.domains}")
            heads = data.domain
        probs = np.zeros(len(data), dtype=np.float64)
        if self.multi_domain:
            probs[:] = _predict(self.models[ALL_DOMAINS], data, heads, batch_size)
        else:
            for h in np.unique(heads):
                rows = np.nonzero(heads == h)[0]
                model = self.models[self.domains[h]]
                probs[rows] = _predict(model, data.subset(rows), np.zeros(len(rows), dtype=np.int64), batch_size)
        return probs

    def evaluate(self, samples: Sequence[Sample], head_domain: Optional[str] = None) -> dict[str, DomainScore]:
        return score_by_domain(samples, self.predict(samples, head_domain=head_domain))


def score_by_domain(samples: Sequence[Sample], probs: np.ndarray) -> dict[str, DomainScore]:
    """AUC / logloss per domain (see :func:`unictr_core.metrics.scores_by_domain`)."""
    scores = metrics.scores_by_domain([s.domain for s in samples], [s.label for s in samples], probs)
    return {domain: DomainScore(m["auc"], m["logloss"], m["rows"], m["positives"]) for domain, m in scores.items()}


def check_labels(samples: Sequence[Sample], source: str) -> None:
    for i, s in enumerate(samples):
        if s.label not in (0, 1):
            raise DataError(source, i + 1, "label", f"expected 0 or 1 for training/evaluation, got {s.label!r}")


def fit_baseline(name: str, factory: Callable[..., BaselineModel], train: Sequence[Sample],
                 valid: Sequence[Sample], settings: Optional[BaselineSettings] = None,
                 log: Optional[Callable[[str], None]] = None) -> FittedBaseline:
    """Fit the encoder on ``train`` and train ``factory``'s model(s); early stopping on ``valid`` AUC.

    Validation rows of domains that are not in ``train`` are ignored.
    """
    settings = settings or BaselineSettings()
    check_labels(train, "train split")
    check_labels(valid, "valid split")
    start = time.perf_counter()
    encoder = FeatureEncoder(max_history=settings.max_history).fit(train)
    spec = encoder.spec()
    train_data, valid_data = encoder.transform(train), encoder.transform(valid)
    valid_data = valid_data.subset(np.nonzero(valid_data.domain >= 0)[0])

    torch.manual_seed(settings.seed)
    probe = factory(spec, **settings.model_kwargs())
    fitted = FittedBaseline(name, bool(probe.multi_domain), encoder, {}, settings)
    if hasattr(probe, "fit_counts"):          # a count rule (the floors): one pass, no epochs
        if not fitted.multi_domain:
            raise TypeError(f"{name}: a model fitted by fit_counts must be multi_domain")
        probe.fit_counts(train_data)
        probe.eval()
        fitted.models[ALL_DOMAINS] = probe
        fitted.epochs_run[ALL_DOMAINS] = 0
        fitted.best_valid_auc[ALL_DOMAINS] = _valid_score(probe, valid_data, valid_data.domain,
                                                          settings.batch_size * 4)
    elif fitted.multi_domain:
        fitted.models[ALL_DOMAINS], epochs, best = _train(probe, (train_data, train_data.domain),
                                                          (valid_data, valid_data.domain), settings, log, name)
        fitted.epochs_run[ALL_DOMAINS], fitted.best_valid_auc[ALL_DOMAINS] = epochs, best
    else:
        for h, domain in enumerate(spec.domains):
            torch.manual_seed(settings.seed)
            model = probe if h == 0 else factory(spec, **settings.model_kwargs())
            tr = train_data.subset(np.nonzero(train_data.domain == h)[0])
            va = valid_data.subset(np.nonzero(valid_data.domain == h)[0])
            zeros_tr, zeros_va = np.zeros(len(tr), dtype=np.int64), np.zeros(len(va), dtype=np.int64)
            fitted.models[domain], epochs, best = _train(model, (tr, zeros_tr), (va, zeros_va), settings, log,
                                                         f"{name}[{domain}]")
            fitted.epochs_run[domain], fitted.best_valid_auc[domain] = epochs, best
    fitted.train_seconds = time.perf_counter() - start
    return fitted


def _tensors(data: EncodedData, heads: np.ndarray, rows: np.ndarray):
    return (torch.from_numpy(data.fields[rows]), torch.from_numpy(data.history[rows]),
            torch.from_numpy(heads[rows]))


def _predict(model: BaselineModel, data: EncodedData, heads: np.ndarray, batch_size: int) -> np.ndarray:
    model.eval()
    out = np.zeros(len(data), dtype=np.float64)
    with torch.no_grad():
        for begin in range(0, len(data), batch_size):
            rows = np.arange(begin, min(begin + batch_size, len(data)))
            out[rows] = torch.sigmoid(model(*_tensors(data, heads, rows)).double()).numpy()   # float64: fewer ties
    return out


def _valid_score(model: BaselineModel, data: EncodedData, heads: np.ndarray, batch_size: int) -> Optional[float]:
    """Mean over heads of the validation AUC (heads whose labels hold one class are skipped)."""
    if len(data) == 0:
        return None
    probs = _predict(model, data, heads, batch_size)
    aucs = [metrics.auc(data.labels[heads == h], probs[heads == h]) for h in np.unique(heads)]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


def _train(model: BaselineModel, train: tuple, valid: tuple, settings: BaselineSettings, log, label: str):
    """Train ``model`` on ``train`` = (EncodedData, heads), early-stopped on ``valid`` = (EncodedData, heads).

    Returns (model with the best validation weights, epochs run, best validation AUC)."""
    if len(train[0]) == 0:
        raise ValueError(f"{label}: no training rows")
    task = _BaselineEpochs(model, train, valid, settings, label)
    run = run_epochs(task, settings.epochs, settings.patience, on_epoch=None if log is None else task.logger(log))
    return model, len(run.history), run.stopping.details


class _BaselineEpochs:
    """A baseline's part of :func:`unictr_core.fit.loop.run_epochs`: Adam over seeded shuffles of the training
    rows, scored by the mean validation AUC of the heads."""

    def __init__(self, model: BaselineModel, train: tuple, valid: tuple, settings: BaselineSettings, label: str):
        self.model, self.settings, self.label = model, settings, label
        (self.train, self.train_heads), (self.valid, self.valid_heads) = train, valid
        self.rows = len(self.train)
        self.optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.rng = np.random.default_rng(settings.seed)
        self.labels = torch.from_numpy(self.train.labels)

    def snapshot(self) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)
        self.model.eval()

    def train_epoch(self, epoch: int, bar) -> tuple[float, bool]:
        """One pass over the rows in a fresh seeded order; returns the mean loss per row."""
        self.model.train()
        order = self.rng.permutation(self.rows)
        total = 0.0
        for begin in range(0, len(order), self.settings.batch_size):
            rows = order[begin:begin + self.settings.batch_size]
            logits = self.model(*_tensors(self.train, self.train_heads, rows))
            loss = bce(logits, self.labels[rows])
            optimiser_step(loss, self.model.parameters(), self.optimiser)
            total += float(loss.detach()) * len(rows)
            bar.update(len(rows))
        return total / len(order), False

    def evaluate(self) -> Evaluation:
        score = _valid_score(self.model, self.valid, self.valid_heads, self.settings.batch_size * 4)
        return Evaluation(score, details=score)

    def logger(self, log: Callable[[str], None]) -> Callable[[dict], None]:
        """An epoch callback that writes each epoch's line to ``log``."""
        def write(record: dict) -> None:
            shown = "n/a" if record["valid_auc"] is None else f"{record['valid_auc']:.4f}"
            log(f"{self.label} epoch {record['epoch']}: train loss {record['train_loss']:.4f}, valid AUC {shown}")
        return write
