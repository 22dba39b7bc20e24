"""From samples to padded token batches.

Prompts are tokenized once. A prompt longer than ``max_length`` first loses its
oldest history items (the current item, at the end of the prompt, is what must
survive), as few as make it fit (found by binary search: O(n log n) for n items);
only if it is still too long without any history is it truncated. Each batch is padded to
its own longest prompt, never to the model maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from unictr_core.data.prompts import TemplateSet
from unictr_core.data.schema import Sample
from unictr_core.modeling.ids import id_slots, id_tensor


@dataclass
class Batch:
    rows: list[int]  # positions of the batch's samples in the encoded set
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    domains: list[str]
    labels: Optional[torch.Tensor]
    ids: Optional[torch.Tensor] = None  # [B, S] hashed ID slots (unictr_core.modeling.ids) for an ID-aware model

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        labels = None if self.labels is None else self.labels.to(device)
        ids = None if self.ids is None else self.ids.to(device)
        return Batch(self.rows, self.input_ids.to(device), self.attention_mask.to(device), self.domains, labels,
                     ids)


def _shortened(sample: Sample, templates: TemplateSet, tokenizer, max_length: int) -> list[int]:
    """The token ids of ``sample``'s prompt without its oldest history items, as few dropped as make it fit.

    Binary search over how many items to drop (the prompt only gets shorter as items go):
    O(log n) renderings of O(n) each, so O(n log n) for a history of n items, not the
    O(n^2) of dropping one item at a time; only the newest ``max_length`` items are candidates at
    all (each item takes at least one token). Still too long without any history: truncated.
    """
    template = templates.for_domain(sample.domain)
    history = list(sample.history[-max_length:])

    def encoded(dropped: int) -> list[int]:
        return tokenizer(template.render(sample, history=history[dropped:]), add_special_tokens=True)["input_ids"]

    fits, ids = len(history), encoded(len(history))
    if len(ids) > max_length:
        text = template.render(sample, history=[])
        return tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    too_long = 0  # the caller found the whole prompt too long
    while fits - too_long > 1:
        middle = (too_long + fits) // 2
        candidate = encoded(middle)
        if len(candidate) <= max_length:
            fits, ids = middle, candidate
        else:
            too_long = middle
    return ids


class EncodedSamples:
    def __init__(self, samples: Sequence[Sample], templates: TemplateSet, tokenizer, max_length: int,
                 id_buckets: Optional[int] = None, id_history: int = 0, id_fields: Sequence[str] = ()):
        self.samples = list(samples)
        # hashed ID slots per sample, for an ID-aware model (ModelConfig.ids, .id_history, .id_fields); None for
        # the text-only model
        self.id_slots: Optional[list[list[int]]] = (
            None if id_buckets is None else [id_slots(s, id_buckets, id_history, id_fields) for s in self.samples])
        self.pad_id = int(tokenizer.pad_token_id)
        # a prompt of max_length tokens holds at most max_length history items: older ones cannot survive
        texts = [templates.for_domain(s.domain).render(s, history=s.history[-max_length:]) for s in self.samples]
        ids = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
        for i, sample in enumerate(self.samples):
            if len(ids[i]) > max_length:
                ids[i] = _shortened(sample, templates, tokenizer, max_length)
        self.token_ids: list[list[int]] = [list(map(int, x)) for x in ids]

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, rows: Sequence[int]) -> Batch:
        rows = list(rows)
        longest = max(len(self.token_ids[r]) for r in rows)
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids = self.token_ids[r]
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        labels = [self.samples[r].label for r in rows]
        label_tensor = None if any(v is None for v in labels) else torch.tensor(labels, dtype=torch.float32)
        return Batch(rows, input_ids, mask, [self.samples[r].domain for r in rows], label_tensor, self.ids(rows))

    def ids(self, rows: Sequence[int]) -> Optional[torch.Tensor]:
        """The [B, S] ID slots of ``rows`` (None for a text-only model)."""
        return None if self.id_slots is None else id_tensor([self.id_slots[r] for r in rows])

    def length_sorted_batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of similar length (less padding) for inference; ``Batch.rows`` maps results back."""
        order = sorted(range(len(self)), key=lambda r: (len(self.token_ids[r]), r))
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])
