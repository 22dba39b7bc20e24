"""Rank N candidate items for one user: `unictr rank` and ``POST /v1/rank``.

One *user context* (``domain``, ``user_id``, ``history`` and any other user field) and N *candidates*
(``item_id``, ``title``, ``brand``, ``price`` and any other item field) make N samples, one per candidate;
they are scored and returned best first.

The shared work is done once where the backbone allows it:

* **decoder backbones** (SmolLM2, Gemma 3, any causal LM): the prompt tokens every candidate shares (the
  longest common token prefix: with the default template the domain, the user and the history come first)
  run through the backbone once; their key/value cache and hidden states are reused for every candidate,
  which then runs only its own tokens. A causal model's prefix positions never see the tokens after them,
  so this is exact: the same probabilities as scoring each row alone, up to float rounding (tested to 1e-5
  in fp32; the heads, which pool over every position, still run on the whole prompt). With dynamic int8
  (``--quantize int8``) activation scales depend on the batch, so any change of batching, this one included,
  moves probabilities by up to about 1e-3;
* **encoder backbones** (minilm, mpnet): every token attends to the candidate's tokens too, so the user's
  part cannot be computed once; no prefix reuse applies and the candidates are scored in batches.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from unictr_core.data.data_io import sample_from_mapping
from unictr_core.data.schema import DataError, Sample
from unictr_core.modeling.batching import EncodedSamples
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.predict import (Predictions, tokenize_samples, prediction_records, predict_encoded, run_modes,
                                          store_outputs)

ENCODER_NOTE = ("encoder backbone: every token also attends to the candidate's tokens, so no prefix reuse "
                "applies; the candidates were scored in batches")


def candidate_samples(user: Any, candidates: Any, source: str = "request body") -> list[Sample]:
    """One sample per candidate: the user's fields with the candidate's; a field in both is refused."""
    if not isinstance(user, dict):
        raise DataError(source, None, "user", f"expected a JSON object (domain, user_id, history, ...), "
                                              f"got {type(user).__name__}")
    if not isinstance(candidates, list) or not candidates:
        raise DataError(source, None, "candidates", "expected a non-empty list of item objects, got "
                                                    f"{'nothing' if candidates is None else type(candidates).__name__}")
    samples = []
    for number, item in enumerate(candidates, start=1):
        where = f"{source}, candidate {number}"
        if not isinstance(item, dict):
            raise DataError(where, None, None, f"expected a JSON object per candidate, got {type(item).__name__}")
        clash = sorted(set(item) & set(user))
        if clash:
            raise DataError(where, None, clash[0], "also given in 'user': a field belongs to the user or to the "
                                                   "candidates, not both")
        samples.append(sample_from_mapping({**user, **item}, where))
    return samples


def shared_prefix_length(token_ids: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    shortest = min(len(ids) for ids in token_ids)
    first = token_ids[0]
    length = 0
    while length < shortest - 1 and all(ids[length] == first[length] for ids in token_ids):
        length += 1
    return length


@dataclass
class Ranking:
    samples: list[Sample]
    predictions: Predictions
    order: list[int]  # candidate positions (0-based), highest probability first; ties keep the given order
    shared_prefix_tokens: int  # prompt tokens computed once for every candidate (0: no prefix reuse)
    prompt_tokens: int  # all prompt tokens of the candidates together
    note: str  # how the shared work was done (or why not)

    @property
    def prefix_reuse(self) -> bool:
        return self.shared_prefix_tokens > 0

    def records(self) -> list[dict]:
        """The candidates best first: rank (1 = best), candidate (its 0-based position in the request), and
        the prediction record as `unictr predict` writes it."""
        records = prediction_records(self.samples, self.predictions)
        return [{"rank": rank, "candidate": i, **records[i]} for rank, i in enumerate(self.order, start=1)]

    def summary(self) -> dict:
        return {"candidates": len(self.samples), "prefix_reuse": self.prefix_reuse,
                "shared_prefix_tokens": self.shared_prefix_tokens, "prompt_tokens": self.prompt_tokens,
                "note": self.note}


def rank_samples(model: UniCTRModel, samples: Sequence[Sample], batch_size: int = 64, reuse_prefix: bool = True,
                 precision: Optional[str] = None) -> Ranking:
    """Score the candidates of one user and sort them (see the module text for the prefix reuse)."""
    encoded = tokenize_samples(model, samples)
    shared = shared_prefix_length(encoded.token_ids)
    if not model.backbone_info.is_decoder:
        shared, note = 0, ENCODER_NOTE
    elif not reuse_prefix:
        shared, note = 0, "prefix reuse turned off: every candidate ran its whole prompt"
    elif shared == 0:
        note = "decoder backbone, but the candidates' prompts share no first token: no prefix reuse"
    else:
        note = (f"decoder backbone: the {shared} prompt tokens all candidates share ran once; their key/value "
                "cache was reused for every candidate")
    if shared:
        predictions = predict_with_prefix(model, encoded, shared, batch_size, precision)
    else:
        predictions = predict_encoded(model, encoded, batch_size, precision=precision)
    order = np.argsort(-predictions.probs, kind="stable").tolist()
    total = sum(len(ids) for ids in encoded.token_ids)
    return Ranking(list(samples), predictions, order, shared, total, note)


def predict_with_prefix(model: UniCTRModel, encoded: EncodedSamples, shared: int, batch_size: int = 64,
                        precision: Optional[str] = None) -> Predictions:
    """Predictions of a decoder model for prompts whose first ``shared`` tokens are the same: the prefix runs
    once, each batch of candidates only its own tokens, on a copy of the prefix's key/value cache."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(encoded)
    dsn, general, zero_shot = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    casting, grad_mode = run_modes(model, precision, device)
    suffixes = copy.copy(encoded)
    suffixes.token_ids = [ids[shared:] for ids in encoded.token_ids]
    try:
        with grad_mode, casting:
            prefix_ids = torch.tensor([encoded.token_ids[0][:shared]], dtype=torch.long, device=device)
            prefix = model.backbone(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True,
                                    output_hidden_states=True)
            prefix_cache, cache_argument = _kv_cache(prefix), _cache_argument(model.backbone)
            for batch in suffixes.length_sorted_batches(batch_size):
                batch = batch.to(device)
                rows, length = batch.input_ids.shape
                cache = copy.deepcopy(prefix_cache)  # each batch appends its own tokens to a copy
                cache.batch_repeat_interleave(rows)
                mask = torch.cat([torch.ones(rows, shared, dtype=batch.attention_mask.dtype, device=device),
                                  batch.attention_mask], dim=1)
                positions = torch.arange(shared, shared + length, device=device).expand(rows, -1)
                out = model.backbone(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions,
                                     use_cache=True, output_hidden_states=True, **{cache_argument: cache})
                needed = set(model.read_layers(batch.domains))  # only those are joined to the prefix's (a copy each)
                states = [torch.cat([p.expand(rows, -1, -1), s], dim=1) if layer in needed else None
                          for layer, (p, s) in enumerate(zip(prefix.hidden_states, out.hidden_states))]
                states, heads_mask = model.summarize(states, mask, needed)  # token summaries, where the model has them
                store_outputs(model.heads(states, heads_mask, batch.domains, batch.ids).float(), batch.rows, dsn,
                              general, zero_shot)
    finally:
        model.train(was_training)
    return Predictions(probs=dsn, general_probs=general, zero_shot=zero_shot)


def _cache_argument(backbone) -> str:
    """The name of the key/value cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _kv_cache(output):
    """The key/value cache of a backbone output (``cache``, or ``past_key_values`` in older transformers)."""
    cache = output.get("cache")
    return output.get("past_key_values") if cache is None else cache
