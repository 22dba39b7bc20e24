"""``unictr prompts``: the prompts exactly as the model reads them, with token counts.

The templates come from where training and prediction take them:

* a home with a trained core: the core's templates as ``unictr predict`` /
  ``evaluate`` load them (:func:`unictr_core.store.loading.load_model`: each DSN's
  bundle template, registry templates, the core's default) and the core's
  tokenizer and ``max_length``;
* no core yet: the templates ``unictr train`` would use
  (:func:`unictr_core.store.registry.templates_for` with the dataset's own template)
  and the tokenizer of ``backbone``.

Token counts are of the full prompt (special tokens included); a prompt over
``max_length`` is shortened at encoding time by dropping its oldest history
items (:class:`unictr_core.modeling.batching.EncodedSamples`), which the preview shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from unictr_core.config import ModelConfig
from unictr_core.data.prompts import TemplateSet
from unictr_core.data.schema import Sample

DEFAULT_LIMIT = 5


@dataclass
class RenderedPrompt:
    sample: Sample
    text: str
    tokens: int           # full prompt
    kept_tokens: int      # what the model reads (<= max_length; oldest history dropped first)


@dataclass
class PromptPreview:
    shown: list[RenderedPrompt]
    rows: int                   # rows the summary covers
    p50: float
    p95: float
    longest: int
    over_max_length: int        # rows whose full prompt exceeds max_length
    max_length: int
    source: str                 # where the templates came from
    field_usage: list = field(default_factory=list)


def _read(data: Path, split: str) -> list[Sample]:
    from unictr_core.data.data_io import read_samples

    if Path(data).is_dir():
        return read_samples(Path(data) / f"{split}.jsonl")
    return read_samples(data)


def _templates(data: Path, domains: Sequence[str], home: Path, backbone: str, max_length: int):
    """(templates, tokenizer, max_length, source) as training or prediction would use them."""
    from unictr_core.store.loading import load_model
    from unictr_core.store.registry import core_fingerprint_of, templates_for

    if core_fingerprint_of(home) is not None:
        model, _ = load_model(home, domains=list(domains))
        return (model.templates, model.backbone_info.tokenizer, model.config.max_length,
                f"the trained core in {home} (as `unictr predict` / `evaluate` render)")
    from unictr_core.data.dataset import dataset_template
    from unictr_core.modeling.backbone import load_tokenizer

    own = dataset_template(data)
    templates = templates_for(domains, home, own)
    where = f"{data}/dataset.yaml's template" if own is not None else "the built-in default template"
    return (templates, load_tokenizer(backbone), max_length,
            f"no core in {home}: as `unictr train` would render (registry templates, else {where}); "
            f"tokenizer of '{backbone}'")


def preview_prompts(data: Path, home: Path, domain: Optional[str] = None, limit: int = DEFAULT_LIMIT,
                    split: str = "train", backbone: str = ModelConfig.backbone,
                    max_length: int = ModelConfig.max_length) -> PromptPreview:
    """Render the rows of ``data`` (a file, or one split of a dataset folder); ``limit`` are returned as text,
    the token-length summary covers every row (of ``domain`` when given)."""
    from unictr_core.data.data_io import validate_domain_name
    from unictr_core.data.prompts import field_usage
    from unictr_core.modeling.batching import EncodedSamples

    samples = _read(Path(data), split)
    if domain is not None:
        validate_domain_name(domain, "--domain")
        samples = [s for s in samples if s.domain == domain]
        if not samples:
            raise ValueError(f"--domain {domain}: no rows of that domain in {data}")
    if not samples:
        raise ValueError(f"{data}: no rows")
    domains = sorted({s.domain for s in samples})
    templates, tokenizer, max_length, source = _templates(Path(data), domains, Path(home), backbone, max_length)
    texts = [templates.render(s) for s in samples]
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]])
    head = samples[:limit]
    encoded = EncodedSamples(head, templates, tokenizer, max_length)
    shown = [RenderedPrompt(s, texts[i], int(lengths[i]), len(encoded.token_ids[i])) for i, s in enumerate(head)]
    return PromptPreview(shown, len(samples), float(np.percentile(lengths, 50)), float(np.percentile(lengths, 95)),
                         int(lengths.max()), int((lengths > max_length).sum()), max_length, source,
                         field_usage(templates, samples))
