"""A safetensors file checked without torch: its header, its tensors' names, shapes and dtypes, finite values.

Format: 8 bytes (little-endian u64, the header's length), a JSON header mapping each tensor's name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows; an optional
``__metadata__`` entry of strings), then the data. :func:`check_weights` reads the header and every tensor's
bytes (DSNs are small) with numpy only, so ``unictr domain list`` can tell a bundle that loads from one that
does not while staying light.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from unictr_core.store.layout import ArtifactError

MAX_HEADER_BYTES = 100 * 1024 * 1024
# float dtypes, by their bit pattern: (unsigned integer of that width, mask of the exponent bits)
FLOAT_DTYPES = {"F16": (np.uint16, 0x7C00), "BF16": (np.uint16, 0x7F80), "F32": (np.uint32, 0x7F800000),
                "F64": (np.uint64, 0x7FF0000000000000)}
ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path, what: str) -> tuple[dict[str, TensorInfo], int]:
    """The tensors a safetensors file declares and where its data starts; ArtifactError when the header is not
    sound (too large, not JSON, offsets outside the file or overlapping, sizes that do not match shapes)."""
    def refuse(reason: str) -> ArtifactError:
        return ArtifactError(f"{what} {path} are not a valid safetensors file: {reason}")

    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise refuse("shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise refuse(f"header of {length} bytes, more than the limit of {MAX_HEADER_BYTES}")
            raw = handle.read(length)
        size = Path(path).stat().st_size
    except OSError as exc:
        raise ArtifactError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) < length:
        raise refuse("truncated inside its header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a JSON object")
    header.pop("__metadata__", None)
    tensors = {name: _tensor_info(name, entry, refuse) for name, entry in header.items()}
    start = 8 + length
    _check_extent(tensors, size - start, refuse)
    return tensors, start


def _tensor_info(name: str, entry, refuse) -> TensorInfo:
    if not isinstance(entry, dict):
        raise refuse(f"entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEM_BYTES:
        raise refuse(f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                                              for d in shape):
        raise refuse(f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise refuse(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if offsets[1] - offsets[0] != count * ITEM_BYTES[dtype]:
        raise refuse(f"tensor {name!r} declares shape {shape} of {dtype} but {offsets[1] - offsets[0]} bytes")
    return TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])


def _check_extent(tensors: dict[str, TensorInfo], data_bytes: int, refuse) -> None:
    position = 0
    for name, info in sorted(tensors.items(), key=lambda item: item[1].begin):
        if info.begin != position:
            raise refuse(f"tensor {name!r} does not start where the previous one ends (gap or overlap)")
        position = info.end
    if position != data_bytes:
        raise refuse(f"the header describes {position} bytes of data, the file holds {data_bytes} "
                     "(truncated or padded)")


def check_weights(path: Path, what: str, layout: Optional[dict[str, list[int]]] = None) -> dict[str, TensorInfo]:
    """The header of ``path`` when every tensor is a float tensor of finite values and, with ``layout`` (name ->
    shape, e.g. the DSN layout a core manifest records), exactly those names with those shapes; else ArtifactError
    naming the file and the first tensor that is wrong."""
    tensors, start = read_header(path, what)
    if layout is not None:
        check_layout(tensors, layout, path, what)
    with open(path, "rb") as handle:
        for name, info in sorted(tensors.items(), key=lambda item: item[1].begin):
            if info.dtype not in FLOAT_DTYPES:
                raise ArtifactError(f"{what} {path}: tensor {name!r} is {info.dtype}, expected a float tensor "
                                    f"({', '.join(FLOAT_DTYPES)})")
            handle.seek(start + info.begin)
            unsigned, exponent = FLOAT_DTYPES[info.dtype]
            bits = np.frombuffer(handle.read(info.end - info.begin), dtype=np.dtype(unsigned).newbyteorder("<"))
            if np.any((bits & unsigned(exponent)) == unsigned(exponent)):
                raise ArtifactError(f"{what} {path}: tensor {name!r} holds NaN or infinite values")
    return tensors


def check_layout(tensors: dict[str, TensorInfo], layout: dict[str, list[int]], path: Path, what: str) -> None:
    """ArtifactError unless ``tensors`` has exactly the names of ``layout``, each with its shape."""
    missing = sorted(set(layout) - set(tensors))
    extra = sorted(set(tensors) - set(layout))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}"] if extra else [])
        raise ArtifactError(f"{what} {path} do not fit the core's architecture: {'; '.join(parts)}")
    for name in sorted(layout):
        if list(tensors[name].shape) != list(layout[name]):
            raise ArtifactError(f"{what} {path} do not fit the core's architecture: tensor {name!r} has shape "
                                f"{list(tensors[name].shape)}, expected {list(layout[name])}")
