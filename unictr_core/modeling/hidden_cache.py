"""One cache of frozen hidden states, for ``unictr train --tune-layers``, ``unictr domain add`` and the benchmarks.

Whatever lies below the tuned part of the model never changes during a run, so
the backbone's hidden states there are computed once (in evaluation mode) and
reused in every epoch. The cache keeps, per row, only the layers asked for,
unpadded (``tokens x hidden`` per layer), in fp16 or bf16 (fp32 for exact
comparisons), and pads each batch again to its own longest row.

Where it lives:

* on a CUDA device while the whole cache fits (at most half of the free device
  memory and at most the budget), else in host memory (pinned when CUDA is used);
* in host RAM up to the budget (``max_gb``, ``--max-cache-gb``); rows beyond it
  go to a memory-mapped file in ``cache_dir`` (``--cache-dir``, default the home).
  The file is unlinked as soon as it is mapped, so nothing is left behind, even
  after a crash.

Size: ``tokens x layers x hidden x 2`` bytes (fp16/bf16); see :func:`bytes_per_row`.

Reuse across runs: a cache of token summaries (``ModelConfig.token_summary``, a
fixed number of vectors per row: small) that fits in RAM is also written to
``<cache>/states/<key>.npy`` (``<cache>``: ``$UNICTR_CACHE`` or
``~/.cache/unictr``), where the key is the SHA-256 of the backbone's weights, the
core's LoRA weights, the layers, summary size, precision and storage, and every
row's token ids in order. The next run over the same prompts with the same
frozen weights (another seed of a benchmark, ``train`` then ``domain add`` of the
same rows) reads it instead of running the backbone. Files are written to a
temporary name and renamed, so a crash never leaves a partial one under the key;
a file of the wrong size is ignored and written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unictr_core.modeling import precision as precisions
from unictr_core.modeling.backbone_cache import cache_root
from unictr_core.modeling.batching import EncodedSamples

STORAGE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
NUMPY_STORAGE = {2: np.uint16, 4: np.float32}  # numpy has no bf16: 2-byte storage is mapped as raw uint16
RAW_STORAGE = {2: torch.int16, 4: torch.float32}  # the same, for stored files
from unictr_core.config import DEFAULT_MAX_CACHE_GB, DEFAULT_PRECISION, TrainConfig

GIB = 2**30

States = list[Optional[torch.Tensor]]


def storage_for(precision: str, is_decoder: bool, choice: Optional[str] = None) -> str:
    """Storage dtype: ``choice`` unless None/auto; else bf16 when computing in bf16 or for a decoder (its
    activations can exceed fp16's range), fp16 otherwise."""
    if choice not in (None, "auto"):
        if choice not in STORAGE:
            raise ValueError(f"cache dtype must be auto or one of {', '.join(STORAGE)}, got '{choice}'")
        return choice
    return "bf16" if precision == "bf16" or is_decoder else "fp16"


def bytes_per_row(tokens: float, layers: int, hidden_size: int, storage: str = "fp16") -> float:
    return tokens * layers * hidden_size * STORAGE[storage].itemsize


class HiddenStateCache:
    """Hidden states at ``layers`` of the rows ``rows`` of an encoded set, filled once by :func:`build_cache`."""

    def __init__(self, lengths: dict[int, int], layers: Sequence[int], num_states: int, hidden_size: int,
                 storage: str = "fp16", max_gb: float = DEFAULT_MAX_CACHE_GB, cache_dir: Optional[Path] = None,
                 device: torch.device = torch.device("cpu")):
        if storage not in STORAGE:
            raise ValueError(f"cache storage must be one of {', '.join(STORAGE)}, got '{storage}'")
        if max_gb < 0:
            raise ValueError(f"the cache budget must be >= 0 GB, got {max_gb}")
        self.layers = sorted(set(layers))
        self.num_states = num_states
        self.hidden_size = hidden_size
        self.storage = storage
        self.dtype = STORAGE[storage]
        self.device = device
        self.width = len(self.layers) * hidden_size
        token_bytes = self.width * self.dtype.itemsize
        total_tokens = sum(lengths.values())
        self.nbytes = total_tokens * token_bytes
        on_device = device.type == "cuda" and self.nbytes <= min(max_gb * GIB, torch.cuda.mem_get_info(device)[0] / 2)
        home = device if on_device else torch.device("cpu")
        ram_tokens = total_tokens if on_device else min(total_tokens, int(max_gb * GIB // max(1, token_bytes)))
        # row -> (segment, first token, length); rows fill RAM first, then the memory-mapped file
        self._slots: dict[int, tuple[int, int, int]] = {}
        used = [0, 0]
        for row, length in lengths.items():
            segment = 0 if used[0] + length <= ram_tokens else 1
            self._slots[row] = (segment, used[segment], length)
            used[segment] += length
        # rows of one length (token summaries): a batch is gathered by index, without a loop over its rows
        self.row_length = next(iter(lengths.values())) if len(set(lengths.values())) == 1 else None
        pin = home.type == "cpu" and device.type == "cuda"
        self.segments = [torch.empty((used[0], self.width), dtype=self.dtype, device=home, pin_memory=pin)]
        self.disk_bytes = used[1] * token_bytes
        self.path: Optional[Path] = None
        self.reused = False  # filled from a file an earlier run stored (see build_cache's reuse)
        if used[1]:
            self.segments.append(self._memory_map(used[1], Path(cache_dir or tempfile.gettempdir())))

    def _memory_map(self, tokens: int, folder: Path) -> torch.Tensor:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".unictr-hidden-", suffix=".mmap", dir=folder)
        os.close(handle)
        self.path = Path(name)
        try:
            array = np.memmap(name, dtype=NUMPY_STORAGE[self.dtype.itemsize], mode="w+", shape=(tokens, self.width))
        finally:
            os.unlink(name)  # the mapping stays valid; the file disappears with the process
        return torch.from_numpy(array).view(self.dtype)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def ram_bytes(self) -> int:
        return self.nbytes - self.disk_bytes

    def put(self, rows: Sequence[int], hidden: Sequence[torch.Tensor]) -> None:
        """Store rows ``rows`` of a padded batch whose hidden states (all layers, h0..hL) are ``hidden``."""
        stacked = torch.cat([hidden[layer] for layer in self.layers], dim=-1)
        for i, row in enumerate(rows):
            segment, start, length = self._slots[row]
            self.segments[segment][start:start + length] = stacked[i, :length].to(self.segments[segment].device,
                                                                                  self.dtype)

    def batch(self, rows: Sequence[int], dtype: torch.dtype = torch.float32) -> tuple[States, torch.Tensor]:
        """The cached states of ``rows`` padded to their longest row (``None`` at layers not kept), and the mask."""
        slots = [self._slots[r] for r in rows]
        if self.row_length is not None:
            return self._states(self._gather(slots), torch.ones((len(rows), self.row_length), dtype=torch.bool), dtype)
        longest = max(length for _, _, length in slots)
        padded = torch.zeros((len(rows), longest, self.width), dtype=self.dtype, device=self.segments[0].device)
        mask = torch.zeros((len(rows), longest), dtype=torch.bool)
        for i, (segment, start, length) in enumerate(slots):
            padded[i, :length] = self.segments[segment][start:start + length]
            mask[i, :length] = True
        return self._states(padded, mask, dtype)

    def _gather(self, slots: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """[B, row_length, width]: rows of one length, gathered by index from each segment."""
        length = self.row_length
        out = torch.empty((len(slots), length, self.width), dtype=self.dtype, device=self.segments[0].device)
        for number, segment in enumerate(self.segments):
            picked = [(i, start // length) for i, (s, start, _) in enumerate(slots) if s == number]
            if picked:
                where, index = (torch.tensor(column, dtype=torch.long) for column in zip(*picked))
                rows = segment.view(-1, length, self.width).index_select(0, index.to(segment.device))
                out[where.to(out.device)] = rows.to(out.device)
        return out

    def _states(self, padded: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> tuple[States, torch.Tensor]:
        padded = padded.to(self.device, dtype, non_blocking=True)
        states: States = [None] * self.num_states
        for k, layer in enumerate(self.layers):
            states[layer] = padded[..., k * self.hidden_size:(k + 1) * self.hidden_size]
        return states, mask.to(self.device)


def states_dir() -> Path:
    """Where caches of token summaries are kept across runs: ``<cache>/states``."""
    return cache_root() / "states"


def _stored_key(model, encoded: EncodedSamples, rows: Sequence[int], layers: Sequence[int], precision: str,
                storage: str) -> str:
    digest = hashlib.sha256()
    settings = (model.backbone_info.weights_sha256, sorted(set(layers)), model.config.token_summary, precision,
                storage, model.config.max_length)
    digest.update(repr(settings).encode())
    for name, value in sorted(model.lora_state().items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().numpy().tobytes())
    for row in rows:
        digest.update(np.asarray(encoded.token_ids[row], dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def _storable(cache: HiddenStateCache) -> bool:
    return cache.row_length is not None and len(cache.segments) == 1 and cache.segments[0].device.type == "cpu"


def _read_stored(cache: HiddenStateCache, path: Path) -> bool:
    """Fill ``cache`` from ``path`` when it holds exactly its shape and raw type; False when missing or unusable."""
    target = cache.segments[0].view(RAW_STORAGE[cache.dtype.itemsize]).numpy()  # the cache's memory, as numpy
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    if array.shape != target.shape or array.dtype != target.dtype:
        return False
    np.copyto(target, array)  # straight from the mapped file into the cache
    return True


def _write_stored(cache: HiddenStateCache, path: Path) -> None:
    """Write the cache to ``path`` atomically (a temporary file renamed); a failure only loses the reuse."""
    name = None
    raw = cache.segments[0].view(RAW_STORAGE[cache.dtype.itemsize])  # numpy has no bf16: store the raw bits
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".states-", suffix=".npy.tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            np.save(out, raw.numpy(), allow_pickle=False)
        os.replace(name, path)
    except OSError:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)


@torch.no_grad()
def build_cache(model, encoded: EncodedSamples, layers: Sequence[int], rows: Optional[Sequence[int]] = None,
                config: Optional[TrainConfig] = None, progress: bool = False, desc: str = "caching hidden states",
                head_inputs: bool = False) -> HiddenStateCache:
    """Run the (frozen, eval-mode) backbone of ``model`` once over ``rows`` of ``encoded`` and cache ``layers``.

    ``rows``: the rows this process needs (default all; under torchrun, its shard).
    ``config`` (default: ``TrainConfig()``): the batches of ``eval_batch_size`` rows, the ``precision`` (resolved:
    ``fp32`` or ``bf16``), the storage ``cache_dtype`` (auto: :func:`storage_for`), the RAM budget
    ``max_cache_gb``, the ``cache_dir`` of what goes beyond it, and ``reuse_states``: read token summaries stored by
    an earlier run over the same rows and weights, and store them for the next (see the module's docstring); no
    effect on token states or a cache beyond RAM.
    ``head_inputs``: cache what the heads read (:meth:`~unictr_core.modeling.model.UniCTRModel.head_inputs`: token
    summaries when the model has them, ``token_summary`` vectors per row and layer) instead of token states.
    """
    config = config or TrainConfig()
    rows = list(range(len(encoded))) if rows is None else list(rows)
    device = next(model.parameters()).device
    storage = storage_for(config.precision, model.backbone_info.is_decoder, config.cache_dtype)
    summary = model.config.token_summary if head_inputs else 0
    cache = HiddenStateCache({r: summary or len(encoded.token_ids[r]) for r in rows}, layers, model.num_layers + 1,
                             model.hidden_size, storage, config.max_cache_gb, config.cache_dir, device)
    stored = None
    if config.reuse_states and summary and _storable(cache):
        stored = states_dir() / f"{_stored_key(model, encoded, rows, layers, config.precision, storage)}.npy"
        if _read_stored(cache, stored):
            cache.reused = True
            return cache
    _fill(model, encoded, cache, rows, config, head_inputs, progress, desc)
    if stored is not None:
        _write_stored(cache, stored)
    return cache


def _fill(model, encoded: EncodedSamples, cache: HiddenStateCache, rows: Sequence[int], config: TrainConfig,
          head_inputs: bool, progress: bool, desc: str) -> None:
    """Run the backbone over ``rows`` in batches of similar length and put their states into ``cache``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(rows, key=lambda r: (len(encoded.token_ids[r]), r))  # similar lengths: little padding
    batch_size, precision, layers = config.eval_batch_size, config.precision, cache.layers
    try:
        with tqdm(total=len(rows), desc=desc, unit="sample", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = encoded.batch(order[start:start + batch_size]).to(device)
                with precisions.autocast(precision, device):
                    if head_inputs:
                        hidden, _ = model.head_inputs(batch.input_ids, batch.attention_mask, layers)
                    else:
                        hidden = model.encode(batch.input_ids, batch.attention_mask)
                cache.put(batch.rows, hidden)
                bar.update(len(batch.rows))
    finally:
        model.train(was_training)


__all__ = ["DEFAULT_MAX_CACHE_GB", "HiddenStateCache", "STORAGE", "build_cache", "bytes_per_row", "states_dir",
           "storage_for"]
