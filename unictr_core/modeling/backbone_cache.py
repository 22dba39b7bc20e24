"""A verified, atomic on-disk cache for backbones that must be converted before use.

Some backbones ship in a form that Hugging Face cannot load quickly (a GGUF file,
a zip split over several packages). The first use converts them into an ordinary
Hugging Face model directory::

    <cache>/backbones/<name>-<sha12>/

where ``<cache>`` is ``$UNICTR_CACHE`` or ``~/.cache/unictr`` and ``<sha12>`` is
the first 12 hex digits of the SHA-256 identifying the source files. Later uses
load from that directory.

Guarantees:

* the source files are hashed and checked against the hashes their package
  declares (wheel ``RECORD``) before conversion, and the hashes are recorded;
* conversion happens in a temporary directory next to the target and is
  renamed into place only when complete, so a crash never leaves a half-written
  cache directory under the final name;
* a lock file serialises conversion of the same backbone across processes;
* every use checks the SHA-256 of every converted file against the manifest
  (once per process per unchanged file); a corrupted or partial directory is
  rebuilt.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from unictr_core.data.files import file_sha256

CACHE_ENV = "UNICTR_CACHE"
MANIFEST = "unictr-cache.json"
MANIFEST_FORMAT = 1


class CacheError(RuntimeError):
    """A source file is missing or does not match its declared hash, or conversion failed."""


@dataclass(frozen=True)
class SourceFile:
    """One input file of a conversion and the SHA-256 its package declares (None: unknown)."""

    path: Path
    sha256: Optional[str] = None


# How many conversions this process has run, per backbone name (lets tests and tools see cache reuse).
conversions: dict[str, int] = {}

# (path, inode, size, mtime_ns, ctime_ns) -> sha256, so unchanged files are hashed once per process.
_hash_memo: dict[tuple, str] = {}


def cache_root() -> Path:
    """``$UNICTR_CACHE`` if set, else ``~/.cache/unictr``."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "unictr"


def backbones_dir() -> Path:
    return cache_root() / "backbones"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, memoised per process while its inode, size and times are unchanged."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _hash_memo:
        _hash_memo[key] = file_sha256(path)
    return _hash_memo[key]


def distribution_file(distribution: str, suffix: str) -> SourceFile:
    """The installed file of ``distribution`` whose path ends with ``suffix``, with the hash from its RECORD.

    Uses only package metadata: the package is never imported (some model packages
    import heavy dependencies in ``__init__``).
    """
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise CacheError(f"package '{distribution}' is not installed") from None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/").endswith(suffix):
            declared = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                declared = base64.urlsafe_b64decode(padded).hex()
            path = Path(dist.locate_file(entry))
            if not path.is_file():
                raise CacheError(f"package '{distribution}' lists {entry} but {path} is missing; reinstall it")
            return SourceFile(path, declared)
    raise CacheError(f"package '{distribution}' has no file ending in '{suffix}'; is it the right version?")


def source_key(sources: Sequence[SourceFile]) -> str:
    """Hex SHA-256 identifying a list of sources: the file's own hash when there is one, else a hash of hashes.

    Declared hashes are used when present, so computing the key (e.g. for
    ``unictr backbones``) never reads the large source files.
    """
    if not sources:
        raise ValueError("a cached backbone needs at least one source file")
    hashes = [s.sha256 or sha256_file(s.path) for s in sources]
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def cache_path(name: str, sources: Sequence[SourceFile]) -> Path:
    return backbones_dir() / f"{name}-{source_key(sources)[:12]}"


def _read_manifest(directory: Path) -> Optional[dict]:
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_cache_dir(directory: Path, converter_version: Optional[str] = None, full: bool = True) -> list[str]:
    """Problems with a converted directory (empty list: it is complete and intact).

    ``full=False`` checks presence and sizes only (cheap, for listings).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [f"{directory} does not exist"]
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        return [f"{directory / MANIFEST} is missing or unreadable (interrupted or foreign directory)"]
    problems = []
    if converter_version is not None and manifest.get("converter_version") != converter_version:
        problems.append(
            f"converted by converter version {manifest.get('converter_version')!r}, current is {converter_version!r}"
        )
    for relative, expected in sorted(manifest["files"].items()):
        path = directory / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{relative}: size {path.stat().st_size}, manifest says {expected['size']}")
        elif full and sha256_file(path) != expected["sha256"]:
            problems.append(f"{relative}: SHA-256 mismatch (file is corrupted)")
    return problems


def is_converted(name: str, sources: Sequence[SourceFile], converter_version: Optional[str] = None) -> bool:
    """Cheap check (sizes only) that a converted directory exists for these sources."""
    return not verify_cache_dir(cache_path(name, sources), converter_version, full=False)


@contextlib.contextmanager
def _locked(lock_path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Exclusive lock (``filelock``) around a conversion; says so when another process holds it."""
    import filelock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log(f"waiting for another process to finish writing {lock_path.stem} ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _verify_sources(name: str, sources: Sequence[SourceFile]) -> list[dict]:
    recorded = []
    for source in sources:
        if not source.path.is_file():
            raise CacheError(f"backbone '{name}': source file {source.path} is missing; reinstall its package")
        actual = sha256_file(source.path)
        if source.sha256 is not None and actual != source.sha256:
            raise CacheError(
                f"backbone '{name}': source file {source.path} has SHA-256 {actual}, but its package declares "
                f"{source.sha256}; the installed file is damaged, reinstall the package"
            )
        recorded.append({"path": str(source.path), "sha256": actual, "size": source.path.stat().st_size})
    return recorded


def _file_table(directory: Path) -> dict[str, dict]:
    table = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST:
            table[relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def _stderr(message: str) -> None:
    print(f"unictr: {message}", file=sys.stderr, flush=True)


def _remove_tree(path: Path) -> None:
    """Move ``path`` out of the way with one rename, then delete it."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def ensure_converted(
    name: str,
    sources: Sequence[SourceFile],
    convert: Callable[[list[Path], Path], None],
    converter_version: str = "1",
    log: Callable[[str], None] = _stderr,
) -> Path:
    """The converted directory for ``sources``, converting (once, under a lock) when absent or damaged.

    ``convert(source_paths, out_dir)`` writes a Hugging Face model directory into
    the empty ``out_dir``; it may also write scratch files there if it removes them.
    """
    target = cache_path(name, sources)
    if not verify_cache_dir(target, converter_version):
        return target
    lock = target.parent / ".locks" / f"{target.name}.lock"
    with _locked(lock, log):
        problems = verify_cache_dir(target, converter_version)
        if not problems:  # another process finished it while we waited
            return target
        for pattern in (f".tmp-{target.name}-*", f".trash-{target.name}-*"):  # left by a crashed process
            for leftover in target.parent.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        recorded_sources = _verify_sources(name, sources)
        if target.exists():
            log(f"cached backbone {target} is unusable ({'; '.join(problems[:3])}); rebuilding it")
        log(f"converting backbone '{name}' into {target} (first use only)")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            work.chmod(0o755)  # mkdtemp makes it private; a cache may be shared read-only
            convert([s.path for s in sources], work)
            manifest = {
                "format": MANIFEST_FORMAT,
                "name": name,
                "converter_version": converter_version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sources": recorded_sources,
                "files": _file_table(work),
            }
            if not manifest["files"]:
                raise CacheError(f"backbone '{name}': conversion wrote no files")
            (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            if target.exists():
                _remove_tree(target)
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        conversions[name] = conversions.get(name, 0) + 1
        log(f"converted backbone '{name}' in {time.monotonic() - started:.1f} s")
    return target


def converted_dirs(name: Optional[str] = None) -> list[Path]:
    """Converted directories in the cache (all, or those of one backbone), complete by a cheap check."""
    root = backbones_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        manifest = _read_manifest(path)
        if manifest is None or (name is not None and manifest.get("name") != name):
            continue
        if not verify_cache_dir(path, full=False):
            found.append(path)
    return found
