"""Crash consistency of a home: SIGKILL at every filesystem step of train / add / replace / remove (issue 15).

The write runs in a forked child whose ``home_store.crash_hook`` kills it with
SIGKILL at step k; the parent then checks that the home lists, loads and predicts
bit-identically to the state before the write or the state after it, and that
the next writer cleans up whatever the crash left. Readers running beside
writers never fail and never see a mix.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import build_home, toy_samples
from unictr_core.store.artifact import load_core
from unictr_core.store.layout import CORE_DIR
from unictr_core.store.writes import save_trained
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.fit.domain_training import DomainAddOptions, train_domain
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry, state_token
from unictr_core.store.writes import commit_bundle, delete_bundle
from unictr_core.store import snapshots as home_store
from unictr_core.fit.training import train_unictr

SAMPLES = toy_samples(8, seed=9, domains=("books", "movies", "music", "toys"))
MATRIX: dict[str, dict] = {}


def observe(home: Path) -> tuple:
    """What a user sees: the listing, the loaded DSNs and every prediction, bit for bit (from one snapshot)."""
    root = home_store.snapshot(home)  # a snapshot folder reads like a home of its own
    registry = Registry.open(root)
    listing = tuple(sorted((n, e.status, e.core_fingerprint) for n, e in registry.entries.items()))
    model, notes = load_model(root)
    predictions = predict_samples(model, SAMPLES)
    return listing, tuple(sorted(model.dsns)), predictions.probs.tobytes(), predictions.zero_shot.tobytes(), \
        len(notes)


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in [*home.iterdir(), *(home / "generations").iterdir()]
                  if p.name.startswith(".") and p.name != ".lock")


@pytest.fixture(scope="module")
def base_home(tiny_bert, tmp_path_factory) -> Path:
    torch.set_num_threads(1)  # many small loads: threads only add overhead here
    return build_home(tiny_bert, tmp_path_factory.mktemp("crash") / "home")


@pytest.fixture(scope="module")
def writes(base_home, tiny_bert) -> dict[str, Callable[[Path], object]]:
    """The write of each command, with its model already trained (training itself never touches the home)."""
    config = TrainConfig(epochs=1, batch_size=16, head_lr=(1e-3, 3e-2), max_steps=2, seed=4)

    def dsn_for(name: str):
        model = load_core(Registry(base_home).root / CORE_DIR)
        train_domain(model, name, toy_samples(24, seed=5, domains=(name,)), toy_samples(12, seed=6, domains=(name,)),
                     toy_samples(12, seed=7, domains=(name,)), config=config,
                     options=DomainAddOptions(progress=False))
        return model

    toys, books = dsn_for("toys"), dsn_for("books")
    retrained = train_unictr(toy_samples(40, seed=2), toy_samples(20, seed=3),
                             ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64),
                             TrainConfig(epochs=1, batch_size=16, max_steps=2, seed=2), progress=False).model
    return {
        "train": lambda home: save_trained(retrained, home),
        "add": lambda home: commit_bundle(home, toys, "toys"),
        "replace": lambda home: commit_bundle(home, books, "books", replace=True),
        "remove": lambda home: delete_bundle(home, "music"),
    }


def copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def run_killed_at(home: Path, write: Callable[[Path], object], k: int) -> bool:
    """Run ``write`` in a forked child that SIGKILLs itself at step ``k``; True when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no cleanup, just the write
        count = 0

        def hook(what: str) -> None:
            nonlocal count
            count += 1
            if count == k:
                os.kill(os.getpid(), signal.SIGKILL)

        home_store.crash_hook = hook
        try:
            write(home)
        except BaseException:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"the write failed in the child (exit {os.WEXITSTATUS(status)})"
    return False


def count_steps(home: Path, write: Callable[[Path], object]) -> list[str]:
    steps: list[str] = []
    home_store.crash_hook = steps.append
    try:
        write(home)
    finally:
        home_store.crash_hook = None
    return steps


@pytest.mark.parametrize("command", ["train", "add", "replace", "remove"])
def test_sigkill_at_every_step_leaves_the_state_before_or_after(command, base_home, writes, tmp_path, monkeypatch):
    monkeypatch.setattr(home_store, "GRACE_S", 0.0)  # the old generation is collected at once: its deletes count too
    write = writes[command]
    before = observe(base_home)
    done = copy_home(base_home, tmp_path / "done")
    steps = count_steps(done, write)
    after = observe(done)
    assert after != before and leftovers(done) == []
    outcomes = []
    for k in range(1, len(steps) + 1):
        home = copy_home(base_home, tmp_path / f"k{k}")
        assert run_killed_at(home, write, k), f"step {k} ({steps[k - 1]}) was not reached"
        seen = observe(home)
        assert seen in (before, after), f"{command} killed at step {k} ({steps[k - 1]}): a mixed state"
        outcomes.append("after" if seen == after else "before")
        current = Registry(home).root
        with home_store.lock(home):  # the next writer cleans up what the crash left
            home_store.recover(home)
        assert leftovers(home) == [], f"{command} killed at step {k} ({steps[k - 1]}): left {leftovers(home)}"
        assert Registry(home).root == current  # cleaning never changes the state
        shutil.rmtree(home)
    # killed before the pointer switch: the old state; at or after it: the new one
    switch = next(i for i, s in enumerate(steps) if s.startswith("switch current"))
    assert outcomes == ["before"] * (switch + 1) + ["after"] * (len(steps) - switch - 1)
    MATRIX[command] = {"steps": len(steps), "before": outcomes.count("before"), "after": outcomes.count("after")}
    print(f"\ncrash matrix {command}: {MATRIX[command]} steps: {steps}")


def test_a_folder_with_core_or_domains_but_no_pointer_is_read_as_it_is_and_never_written(tmp_path):
    home = tmp_path / "not-a-home"
    (home / "domains").mkdir(parents=True)
    assert state_token(home) == "empty" and home_store.snapshot(home) == home
    with pytest.raises(home_store.HomeStoreError, match="holds domains but no 'current' link"):
        with home_store.transaction(home):
            pass
    assert sorted(p.name for p in home.iterdir()) == [".lock", "domains"]  # nothing written but the lock


def test_readers_beside_writers_never_fail_and_never_see_a_mix(base_home, writes, tmp_path):
    home = copy_home(base_home, tmp_path / "home")
    without, token = observe(home), state_token(home)
    writes["add"](home)
    with_toys = observe(home)
    assert state_token(home) != token
    delete_bundle(home, "toys")
    errors: list[BaseException] = []
    seen: list[tuple] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(observe(home))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    torch.set_num_threads(1)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(4):
            writes["add"](home)
            delete_bundle(home, "toys")
    finally:
        stop.set()
        thread.join()
    assert errors == [] and seen
    assert all(s in (without, with_toys) for s in seen), "a reader saw a mix of two states"
