"""Dataset folders and splits.

A dataset folder holds ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (one
``Sample.to_dict()`` per line) and ``dataset.yaml``: name, description, per
domain and split the row count and positive rate, ``holdout_domains`` (meant
for zero-shot / ``domain add``, left out of joint training by default),
provenance and what was fitted on the training split only. An optional
``template`` (a prompt template mapping, see :mod:`unictr_core.data.prompts`) is the
dataset's own template: adapters write one that renders every field they
create; training uses it for every domain the registry has no template for and
stores it as the core's default template (see :func:`dataset_template`).

``split_by_time`` and ``split_random`` split per domain; ``subsample_per_domain`` caps the rows of each domain.
``write_dataset`` writes a folder atomically; ``load_dataset`` reads it back.
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import yaml

from unictr_core.data import yaml_io
from unictr_core.data.data_io import to_jsonl_text, read_samples, validate_domain_name
from unictr_core.data.files import atomic_directory, atomic_write_text
from unictr_core.data.prompts import PromptTemplate
from unictr_core.data.schema import DataError, Sample

SPLITS = ("train", "valid", "test")
META_FILE = "dataset.yaml"
PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------

def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train, valid, test) summing to 1, "
                         f"got {tuple(fractions)!r}")
    return values  # type: ignore[return-value]


def _by_domain(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.domain].append(sample)
    return groups


def _cut_points(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    first = int(round(n * fractions[0]))
    second = int(round(n * (fractions[0] + fractions[1])))
    return min(first, n), min(max(second, first), n)


def split_by_time(samples: Iterable[Sample], fractions: Sequence[float] = (0.8, 0.1, 0.1)
                  ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split each domain in time: the earliest share is train, then valid, then test.

    Samples are sorted by timestamp (stable). A timestamp never straddles two
    parts: ties at a cut go to the later part, so every validation and test
    sample is at least as late as every training sample of its domain.
    """
    shares = _check_fractions(fractions)
    parts: tuple[list[Sample], list[Sample], list[Sample]] = ([], [], [])
    for domain, group in _by_domain(samples).items():
        for position, sample in enumerate(group):
            if sample.timestamp is None:
                raise DataError(f"<domain {domain}>", position + 1, "timestamp",
                                "a time split needs a timestamp on every sample "
                                f"(user {sample.user_id!r}, item {sample.item_id!r})")
        ordered = sorted(group, key=lambda s: s.timestamp)
        stamps = [s.timestamp for s in ordered]
        cuts = []
        for cut in _cut_points(len(ordered), shares):
            while 0 < cut < len(stamps) and stamps[cut - 1] == stamps[cut]:
                cut -= 1
            cuts.append(max(cut, cuts[-1]) if cuts else cut)
        parts[0].extend(ordered[:cuts[0]])
        parts[1].extend(ordered[cuts[0]:cuts[1]])
        parts[2].extend(ordered[cuts[1]:])
    return parts


def split_random(samples: Iterable[Sample], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
                 ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split each domain at random (seeded; input order kept inside each part)."""
    shares = _check_fractions(fractions)
    parts: tuple[list[Sample], list[Sample], list[Sample]] = ([], [], [])
    for domain, group in _by_domain(samples).items():
        order = list(range(len(group)))
        random.Random(f"{seed}:{domain}").shuffle(order)
        first, second = _cut_points(len(group), shares)
        for part, chosen in zip(parts, (order[:first], order[first:second], order[second:])):
            part.extend(group[i] for i in sorted(chosen))
    return parts


def subsample_per_domain(samples: Sequence[Sample], max_rows: Optional[int], seed: int) -> list[Sample]:
    """At most ``max_rows`` samples of each domain, drawn with ``seed`` (one generator, the domains in the order
    of their first row), the original order kept; a new list (all of ``samples`` when ``max_rows`` is None).

    The one subsample of `unictr train`, `unictr domain add` and `unictr benchmark` (``--max-rows``)."""
    if max_rows is None:
        return list(samples)
    rows_of: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        rows_of.setdefault(sample.domain, []).append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for rows in rows_of.values():
        keep.update(rows if len(rows) <= max_rows else rng.sample(rows, max_rows))
    return [s for i, s in enumerate(samples) if i in keep]


# ----------------------------------------------------------------------------
# dataset folders
# ----------------------------------------------------------------------------

@dataclass
class Dataset:
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def domains(self) -> list[str]:
        """All domain names, sorted."""
        return sorted({s.domain for part in (self.train, self.valid, self.test) for s in part})

    @property
    def holdout_domains(self) -> list[str]:
        return list(self.meta.get("holdout_domains") or [])

    @property
    def template(self) -> Optional[PromptTemplate]:
        """The dataset's own prompt template (``template`` in dataset.yaml), or ``None``."""
        return _template_of(self.meta, META_FILE)

    @property
    def joint_domains(self) -> list[str]:
        """Domains meant for joint training (all but the held-out ones)."""
        held = set(self.holdout_domains)
        return [d for d in self.domains if d not in held]


def domain_stats(splits: dict[str, Sequence[Sample]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per domain, per split: ``rows`` and ``positive_rate`` (``None`` when the split is empty)."""
    domains = sorted({s.domain for part in splits.values() for s in part})
    stats: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in domains}
    for split_name, part in splits.items():
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for s in part:
            counts[s.domain][0] += 1
            counts[s.domain][1] += int(s.label == 1)
        for d in domains:
            rows, positives = counts[d] if d in counts else (0, 0)
            stats[d][split_name] = {"rows": rows,
                                    "positive_rate": round(positives / rows, 4) if rows else None}
    return stats


def _check_for_writing(split_name: str, part: Sequence[Sample]) -> None:
    for position, s in enumerate(part, start=1):
        source = f"{split_name} split"
        if not isinstance(s, Sample):
            raise TypeError(f"{source}, item {position}: expected a Sample, got {type(s).__name__}")
        validate_domain_name(s.domain, source, position)
        if s.label not in (0, 1):
            raise DataError(source, position, "label", f"expected 0 or 1 in a dataset split, got {s.label!r}")


def _build_meta(meta: dict[str, Any], splits: dict[str, Sequence[Sample]]) -> dict[str, Any]:
    meta = dict(meta or {})
    holdout = meta.get("holdout_domains") or []
    if not isinstance(holdout, (list, tuple)) or not all(isinstance(d, str) for d in holdout):
        raise ValueError(f"meta['holdout_domains'] must be a list of domain names, got {holdout!r}")
    out: dict[str, Any] = {
        "name": str(meta.pop("name", "dataset")),
        "description": str(meta.pop("description", "")),
        "domains": domain_stats(splits),
        "holdout_domains": list(holdout),
        "provenance": str(meta.pop("provenance", "")),
        "fitted_on_train": meta.pop("fitted_on_train", []),
    }
    meta.pop("holdout_domains", None)
    meta.pop("domains", None)
    out.update(meta)
    return out


def write_dataset(directory: PathLike, train: Sequence[Sample], valid: Sequence[Sample],
                  test: Sequence[Sample], meta: Optional[dict[str, Any]] = None) -> Path:
    """Write a dataset folder atomically and return its path.

    Everything is written into a temporary folder next to ``directory`` and then
    renamed into place; until that moment any previous folder stays untouched.
    An existing non-empty folder that is not a dataset folder is never replaced.
    """
    target = Path(directory)
    splits = {"train": list(train), "valid": list(valid), "test": list(test)}
    for name, part in splits.items():
        _check_for_writing(name, part)
    full_meta = _build_meta(meta or {}, splits)
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"{target}: exists and is not a folder")
        if any(target.iterdir()) and not (target / META_FILE).exists():
            raise FileExistsError(f"{target}: folder is not empty and holds no {META_FILE}; "
                                  "refusing to replace it (choose an empty or new folder)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FileExistsError(f"{target}: cannot create its parent folder, a file is in the way") from None
    with atomic_directory(target) as staging:
        for name, part in splits.items():
            atomic_write_text(staging / f"{name}.jsonl", to_jsonl_text(part))
        atomic_write_text(staging / META_FILE, yaml.safe_dump(full_meta, sort_keys=False, allow_unicode=True))
        os.chmod(staging, 0o755)
    return target


def _template_of(meta: dict[str, Any], source: str) -> Optional[PromptTemplate]:
    data = meta.get("template")
    if data is None:
        return None
    try:
        return PromptTemplate.from_dict(data, source=f"{source}, field 'template'")
    except ValueError as exc:
        raise DataError(str(source), None, "template", str(exc)) from None


def dataset_template(directory: PathLike) -> Optional[PromptTemplate]:
    """The prompt template a dataset folder's ``dataset.yaml`` carries (``None``: none, or not a folder)."""
    folder = Path(directory)
    if not (folder / META_FILE).is_file():
        return None
    return _template_of(_read_meta(folder / META_FILE), str(folder / META_FILE))


def _read_meta(meta_path: Path) -> dict[str, Any]:
    if not meta_path.is_file():
        raise DataError(str(meta_path), None, None, f"missing {META_FILE}; is this a dataset folder?")
    meta = yaml_io.read_file(meta_path, "dataset description",
                             lambda message: DataError(str(meta_path), None, None, message)) or {}
    if not isinstance(meta, dict):
        raise DataError(str(meta_path), None, None, "expected a mapping at the top level")
    return meta


def load_dataset(directory: PathLike) -> Dataset:
    """Read a dataset folder back (every row validated, labels required)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DataError(str(folder), None, None, "dataset folder not found")
    meta_path = folder / META_FILE
    meta = _read_meta(meta_path)
    _template_of(meta, str(meta_path))  # a broken template fails here, before any training
    holdout = meta.get("holdout_domains") or []
    if not isinstance(holdout, list) or not all(isinstance(d, str) for d in holdout):
        raise DataError(str(meta_path), None, "holdout_domains", f"expected a list of domain names, got {holdout!r}")
    parts = {name: read_samples(folder / f"{name}.jsonl", require_labels=True) for name in SPLITS}
    return Dataset(parts["train"], parts["valid"], parts["test"], meta)
