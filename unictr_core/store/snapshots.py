"""A UniCTR home as a sequence of immutable snapshots, switched by one atomic pointer.

Layout::

    home/
      current -> generations/g000007   the pointer: a relative symbolic link, the only thing a write
                                       changes in place (one ``os.replace``)
      core -> current/core             static links, so that home/core/manifest.yaml and
      domains -> current/domains       home/domains/<name>/ read the current state
      generations/g000007/core/        manifest.yaml, core.safetensors
      generations/g000007/domains/     <name>/domain.yaml, <name>/dsn.safetensors
      .lock                            writers' exclusive lock

A write (train, domain add / replace / remove) holds the lock, builds a complete
new generation in ``generations/.staging-*`` (hard links to the unchanged files
of the current one, new files for what changes), fsyncs its files and folders,
renames it to the next ``gNNNNNN`` and switches ``current`` to it with one
``os.replace``, then fsyncs the home. A reader resolves ``current`` once
(:func:`snapshot`) and reads only that generation's files, which are never
modified; so a reader never sees a mix, and a crash at any instant leaves the
old state or the new one.

The next write cleans up after an interrupted one (staging folders, a generation
that was never switched to) and says so; generations no longer current are
deleted once they have been retired for :data:`GRACE_S` seconds (readers that
resolved them earlier have finished by then).

A home that no write has made yet (no ``current`` pointer) is read as the folder
itself: empty. A write refuses a folder that holds ``core/`` or ``domains/`` but no
pointer (not a layout this version writes).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import filelock

from unictr_core.store.layout import CORE_DIR, DOMAINS_DIR, MANIFEST

CORE = CORE_DIR
DOMAINS = DOMAINS_DIR
POINTER = "current"
GENERATIONS = "generations"
LOCK = ".lock"
GRACE_S = float(os.environ.get("UNICTR_GENERATION_GRACE_S", 600))
LOCK_TIMEOUT_S = 30.0
_GENERATION = re.compile(r"g(\d{6,})")

# test-only: called with a description before every filesystem step of a write (crash-consistency tests)
crash_hook: Optional[Callable[[str], None]] = None


class HomeStoreError(RuntimeError):
    """The home cannot be written now (locked by another writer, unreadable pointer, ...)."""


def step(what: str) -> None:
    """Mark one filesystem step of a write (the crash tests kill the process here)."""
    if crash_hook is not None:
        crash_hook(what)


# --------------------------------------------------------------------------- readers
def snapshot(home: Path) -> Path:
    """The folder holding the home's current ``core/`` and ``domains/``; resolve it once per read.

    For a home no write has made yet (no pointer) it is the home itself.
    """
    home = Path(home)
    pointer = home / POINTER
    if not pointer.is_symlink():
        return home
    target = os.readlink(pointer)
    if not _GENERATION.fullmatch(Path(target).name) or Path(target).parent != Path(GENERATIONS):
        raise HomeStoreError(f"{pointer} points to {target!r}, not to a generation in {GENERATIONS}/")
    return home / GENERATIONS / Path(target).name


def state_token(home: Path) -> str:
    """A string that changes whenever a write (train, domain add/replace/remove) has committed; reads no weights."""
    pointer = Path(home) / POINTER
    return os.readlink(pointer) if pointer.is_symlink() else "empty"


def generation_number(token: str) -> int:
    """The number of the generation a :func:`state_token` names (``generations/g000002``: 2), the number in the
    folder name on disk; 0 for a token that names no generation (a home no write has made yet)."""
    path = Path(token)
    number = _number(path.name) if path.parent == Path(GENERATIONS) else None
    return 0 if number is None else number


class SnapshotRetired(HomeStoreError):
    """A reader outlived its snapshot: a newer write retired it and the grace period deleted it."""


def ensure_alive(root: Path) -> None:
    """SnapshotRetired when ``root`` (a snapshot :func:`snapshot` resolved) is a generation deleted since."""
    root = Path(root)
    if root.parent.name == GENERATIONS and _GENERATION.fullmatch(root.name) and not root.is_dir():
        raise SnapshotRetired(f"the snapshot {root.name} of {root.parent.parent} was retired by a newer write "
                              f"while it was being read (its grace period of {GRACE_S:g} s ran out); retry")


# --------------------------------------------------------------------------- the lock
@contextlib.contextmanager
def lock(home: Path, timeout: Optional[float] = None) -> Iterator[Path]:
    """Exclusive lock on the home's writes; waits up to ``timeout`` (default LOCK_TIMEOUT_S) s for another writer.

    The lock file records its holder's pid, which the error names when the wait runs out.
    """
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK

    def record_holder(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)

    held = filelock.FileLock(path, timeout=timeout, poll_interval=0.1, on_acquired=record_holder)
    try:
        held.acquire()
    except filelock.Timeout:
        try:
            holder = path.read_text(errors="replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise HomeStoreError(f"the home {home} is locked by another writer (`unictr train` or `domain "
                             f"add/remove`, {holder}); try again when it has finished") from None
    try:
        yield path
    finally:
        held.release()


# --------------------------------------------------------------------------- writers
@dataclass
class Transaction:
    """A write in progress: ``root`` is the new generation being built, ``base`` the current snapshot."""

    home: Path
    root: Path
    base: Path
    notes: list[str] = field(default_factory=list)

    def remove(self, relative: str) -> None:
        """Delete ``relative`` (a file, folder or link) from the new generation; a link is removed, not followed."""
        path = self.root / relative
        step(f"delete {relative}")
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


@contextlib.contextmanager
def transaction(home: Path, lock_timeout: Optional[float] = None,
                notes: Optional[list[str]] = None) -> Iterator[Transaction]:
    """Build the next generation of ``home`` and switch to it atomically when the block succeeds.

    The block gets a :class:`Transaction` whose ``root`` starts as a copy (hard
    links) of the current snapshot; it changes only files under ``root`` by
    writing new files (never writing into an existing one). On an exception the
    new generation is discarded and the home is unchanged. ``notes`` (when given)
    receives what had to be cleaned up first (see :func:`recover`).
    """
    home = Path(home)
    notes = [] if notes is None else notes
    with lock(home, lock_timeout):
        notes += recover(home)
        base = snapshot(home)
        generations = home / GENERATIONS
        generations.mkdir(exist_ok=True)
        staging = generations / f".staging-{os.getpid()}-{time.time_ns()}"
        step("create staging")
        staging.mkdir()
        txn = Transaction(home, staging, base, notes)
        try:
            for part in (CORE, DOMAINS):
                if (base / part).is_dir():
                    _link_tree(base / part, staging / part)
            (staging / DOMAINS).mkdir(exist_ok=True)
            yield txn
            _fsync_tree(staging)
            name = f"g{_last_number(home) + 1:06d}"
            step(f"rename staging to {name}")
            os.rename(staging, generations / name)
            _fsync_dir(generations)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _switch(home, name)
        _ensure_links(home)
        _collect_garbage(home, txn.notes)


def recover(home: Path) -> list[str]:
    """Clean up after an interrupted write (holding the lock). Returns notes."""
    home = Path(home)
    notes: list[str] = []
    for pattern in (f".{POINTER}-*", f".{CORE}-*", f".{DOMAINS}-*"):  # links and folders of an interrupted switch
        for stale in home.glob(pattern):
            step(f"delete {stale.name}")
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    if not (home / POINTER).is_symlink():
        _check_new(home)
        return notes
    _ensure_links(home)
    current = _number(snapshot(home).name)
    generations = home / GENERATIONS
    for path in sorted(generations.iterdir()):
        if path.name.startswith(".staging-"):
            notes.append(f"cleaned up an interrupted write of {home} ({path.name}, never committed)")
            step(f"delete {path.name}")
            shutil.rmtree(path)
        elif path.name.startswith(".deleting-"):
            notes.append(f"finished deleting a retired generation of {home} ({path.name}; an earlier write was "
                         "interrupted while deleting it)")
            step(f"delete {path.name}")
            shutil.rmtree(path)
        elif _number(path.name) is not None and _number(path.name) > current:
            notes.append(f"discarded generation {path.name} of {home}: an interrupted write built it but never "
                         f"switched to it; the home stays at g{current:06d}")
            _delete_generation(generations, path)
    return notes


def _check_new(home: Path) -> None:
    """HomeStoreError unless ``home``, which has no pointer, holds nothing a write would lose or misread."""
    found = [part for part in (CORE, DOMAINS) if (home / part).exists() or (home / part).is_symlink()]
    generations = home / GENERATIONS
    if generations.is_dir() and any(_number(p.name) is not None for p in generations.iterdir()):
        raise HomeStoreError(f"{home} holds generations but no '{POINTER}' link to the current one; restore it "
                             f"(e.g. `ln -s {GENERATIONS}/gNNNNNN {home / POINTER}`) before writing")
    if found:
        raise HomeStoreError(f"{home} holds {' and '.join(found)} but no '{POINTER}' link: not a home this version "
                             "of UniCTR wrote; choose another --home")


def _switch(home: Path, name: str) -> None:
    """Point ``current`` at generation ``name`` in one atomic step, then make it durable."""
    previous = home / POINTER
    retired = snapshot(home) if previous.is_symlink() else None
    temporary = home / f".{POINTER}-{os.getpid()}"
    step(f"link {temporary.name}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(f"{GENERATIONS}/{name}", temporary)
    if retired is not None and retired.is_dir():
        # its retirement time, for the grace period: set before the switch, so that no crash can leave a retired
        # generation with an old time (the next write would delete it at once, under readers still on it)
        step(f"mark {retired.name} retired")
        os.utime(retired)
        _fsync_dir(retired)
    step(f"switch {POINTER} to {name}")
    os.replace(temporary, previous)
    _fsync_dir(home)


def _ensure_links(home: Path) -> None:
    """``core`` and ``domains`` in the home are the static links into ``current`` (made by the first write)."""
    for part in (CORE, DOMAINS):
        path = home / part
        wanted = f"{POINTER}/{part}"
        if path.is_symlink() and os.readlink(path) == wanted:
            continue
        temporary = home / f".{part}-link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        step(f"link {part}")
        os.symlink(wanted, temporary)
        os.replace(temporary, path)
    _fsync_dir(home)


def _collect_garbage(home: Path, notes: list[str]) -> None:
    """Delete generations that have been retired for GRACE_S seconds (never the current one)."""
    generations = home / GENERATIONS
    current = _number(snapshot(home).name)
    now = time.time()
    for path in sorted(generations.iterdir()):
        number = _number(path.name)
        if number is None or number >= current:
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime >= GRACE_S:
                _delete_generation(generations, path)


def _delete_generation(generations: Path, path: Path) -> None:
    """Out of sight in one rename, then deleted (an interrupted delete is finished by the next write)."""
    doomed = generations / f".deleting-{path.name}-{os.getpid()}"
    step(f"retire {path.name}")
    os.rename(path, doomed)
    step(f"delete {doomed.name}")
    shutil.rmtree(doomed)


def _number(name: str) -> Optional[int]:
    match = _GENERATION.fullmatch(name)
    return int(match.group(1)) if match else None


def _last_number(home: Path) -> int:
    numbers = [_number(p.name) for p in (home / GENERATIONS).iterdir()]
    return max([n for n in numbers if n is not None] + [0])


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder as hard links (files are immutable); symbolic links are copied as links, never followed.

    Names starting with a dot (temporary files) are left out.
    """
    target.mkdir()
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):
            continue
        destination = target / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry), destination)
        elif entry.is_dir():
            _link_tree(entry, destination)
        else:
            step(f"link {destination.name}")
            try:
                os.link(entry, destination)
            except OSError:  # no hard links on this filesystem
                shutil.copy2(entry, destination)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_symlink():
            continue
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
