"""Files: atomic writes (a crash leaves the old file or folder or the new one, never a half-written one) and
SHA-256 digests of files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``target``, on error it is removed.

    A previous call killed between its two renames left ``target`` missing and the old folder in
    ``.<name>.old-<pid>``: the next call puts it back first. (Homes use :mod:`unictr_core.store.snapshots`.)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():  # killed between the two renames below: the previous folder waits in .old-PID
        retired = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if retired:
            os.replace(retired[-1], target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if target.exists():
        retired = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, retired)
    os.replace(staging, target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def hash_file(digest, path: PathLike) -> None:
    """Feed a file's bytes to ``digest`` (a hashlib object), in 4 MiB blocks."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    hash_file(digest, path)
    return digest.hexdigest()
