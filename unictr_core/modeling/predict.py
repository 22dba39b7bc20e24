"""Prediction and evaluation with a trained model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from unictr_core import metrics
from unictr_core.config import DEFAULT_PRECISION, TrainConfig
from unictr_core.data.schema import Sample
from unictr_core.modeling import precision as precisions
from unictr_core.modeling.batching import EncodedSamples
from unictr_core.modeling.model import UniCTRModel


@dataclass
class Predictions:
    probs: np.ndarray  # the domain's DSN where it has one, else the general network
    general_probs: np.ndarray
    zero_shot: np.ndarray  # True where no DSN exists for the sample's domain


def tokenize_samples(model: UniCTRModel, samples: Sequence[Sample]) -> EncodedSamples:
    """``samples`` rendered with ``model``'s templates and tokenized (token ids, and hashed ids where the model
    reads them); no backbone runs (that is :meth:`unictr_core.modeling.model.UniCTRModel.encode`)."""
    return EncodedSamples(samples, model.templates, model.backbone_info.tokenizer, model.config.max_length,
                          id_buckets=model.id_buckets, id_history=model.config.id_history,
                          id_fields=model.config.id_fields)


def predict_encoded(model: UniCTRModel, encoded: EncodedSamples,
                    batch_size: int = TrainConfig.eval_batch_size,
                    progress: Optional[object] = None, precision: Optional[str] = None, cache=None) -> Predictions:
    """One backbone pass per batch, whatever the mix of domains in it.

    ``precision``: fp32, bf16 or auto (:mod:`unictr_core.modeling.precision`); default: the precision a
    prepared model (:mod:`unictr_core.modeling.fast_path`) was prepared for, else
    ``config.DEFAULT_PRECISION``. A prepared model runs under ``torch.inference_mode`` without autocast (its
    weights already are in its precision); an unprepared one under ``torch.no_grad`` with bf16 autocast where
    asked. ``cache``: a
    :class:`~unictr_core.modeling.hidden_cache.HiddenStateCache` of ``encoded`` holding
    ``model.cached_layers()`` (the backbone then runs only above the cut).
    """
    was_training = model.training
    model.eval()
    n = len(encoded)
    dsn = np.zeros(n, dtype=np.float64)
    general = np.zeros(n, dtype=np.float64)
    zero_shot = np.zeros(n, dtype=bool)
    device = next(model.parameters()).device
    casting, grad_mode = run_modes(model, precision, device)
    try:
        with grad_mode:
            for batch in encoded.length_sorted_batches(batch_size):
                batch = batch.to(device)
                hidden, mask = (None, batch.attention_mask) if cache is None else cache.batch(batch.rows)
                with casting:
                    out = model(batch.input_ids, mask, batch.domains, batch.ids, hidden_states=hidden).float()
                store_outputs(out, batch.rows, dsn, general, zero_shot)
                if progress is not None:
                    progress.update(len(batch.rows))
    finally:
        model.train(was_training)
    return Predictions(probs=dsn, general_probs=general, zero_shot=zero_shot)


def run_modes(model: UniCTRModel, precision: Optional[str], device: torch.device):
    """(autocast context, grad context) for a forward pass of ``model`` at ``precision`` (None: the model's)."""
    prepared = getattr(model, "serving_precision", None)
    resolved = precisions.resolve(precision or prepared or DEFAULT_PRECISION, device, model.quantized)
    if prepared is None:
        return precisions.autocast(resolved, device), torch.no_grad()
    if resolved != prepared:
        raise ValueError(f"this model was prepared for {prepared} prediction; it cannot predict in {resolved} "
                         "(load it again for another precision)")
    return contextlib.nullcontext(), torch.inference_mode()


def store_outputs(out, rows, dsn: np.ndarray, general: np.ndarray, zero_shot: np.ndarray) -> None:
    """Probabilities of a batch's ``rows`` into the result arrays."""
    dsn[rows] = torch.sigmoid(out.dsn_logits).double().cpu().numpy()
    general[rows] = torch.sigmoid(out.general_logits).double().cpu().numpy()
    zero_shot[rows] = ~out.has_dsn.cpu().numpy()


def predict_samples(model: UniCTRModel, samples: Sequence[Sample],
                    batch_size: int = TrainConfig.eval_batch_size,
                    progress: Optional[object] = None, precision: Optional[str] = None) -> Predictions:
    return predict_encoded(model, tokenize_samples(model, samples), batch_size, progress, precision)


ZERO_SHOT_LABEL = "general (zero-shot)"
DSN_LABEL = "dsn"


class NonFiniteOutput(ValueError):
    """The model answered NaN or an infinity: never written out as a probability."""


def prediction_records(samples: Sequence[Sample], predictions: Predictions) -> list[dict]:
    """One record per sample, as `unictr predict` writes it and the server answers it.

    NonFiniteOutput (naming the first row and its domain) when a probability is NaN or infinite: no output of
    UniCTR ever holds NaN / Infinity (which is not JSON).
    """
    probs = np.asarray(predictions.probs, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(probs))
    if bad.size:
        first = samples[int(bad[0])]
        raise NonFiniteOutput(f"the model answered a non-finite probability for {bad.size} row(s), first row "
                              f"{int(bad[0]) + 1} (domain '{first.domain}'); its core or DSN weights are damaged")
    return [{"domain": s.domain, "user_id": s.user_id, "item_id": s.item_id, "probability": round(float(p), 6),
             "predicted_by": ZERO_SHOT_LABEL if zero else DSN_LABEL}
            for s, p, zero in zip(samples, predictions.probs, predictions.zero_shot)]


def domain_metrics(samples: Sequence[Sample], predictions: Predictions) -> dict[str, dict]:
    """Per domain: rows, positive rate, AUC and logloss of the model and of the general network."""
    domains, labels = [s.domain for s in samples], [s.label for s in samples]
    model = metrics.scores_by_domain(domains, labels, predictions.probs)
    general = metrics.scores_by_domain(domains, labels, predictions.general_probs)
    zero_shot = np.asarray(predictions.zero_shot)
    names = np.asarray(domains)
    return {domain: {"rows": m["rows"], "positive_rate": m["positive_rate"],
                     "zero_shot": bool(zero_shot[names == domain].all()), "auc": m["auc"], "logloss": m["logloss"],
                     "general_auc": general[domain]["auc"], "general_logloss": general[domain]["logloss"]}
            for domain, m in model.items()}


def mean_domain_metric(per_domain: dict[str, dict], key: str,
                       include_zero_shot: bool = False) -> Optional[float]:
    """The mean over domains of metric ``key`` (``"auc"``, ``"logloss"``, ...) of :func:`domain_metrics`.

    Domains where it is undefined are left out, and so are zero-shot domains unless ``include_zero_shot``;
    ``None`` when no domain is left.
    """
    values = [m[key] for m in per_domain.values() if m[key] is not None and (include_zero_shot or not m["zero_shot"])]
    return float(np.mean(values)) if values else None


def mean_auc(per_domain: dict[str, dict], include_zero_shot: bool = False) -> Optional[float]:
    """The mean AUC over domains: :func:`mean_domain_metric` of ``"auc"``."""
    return mean_domain_metric(per_domain, "auc", include_zero_shot)
