"""Shared fixtures: tiny random backbones (encoder and decoder), a small labelled sample set, a tiny trained home."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# stored hidden states (unictr_core.modeling.hidden_cache) and converted backbones go to a folder of this run
os.environ.setdefault("UNICTR_CACHE", tempfile.mkdtemp(prefix="unictr-test-cache-"))

import pytest
import torch

from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.data.schema import Sample
from unictr_core.modeling.tiny import make_tiny_backbone

torch.set_num_threads(min(2, torch.get_num_threads()))

THEMES = {
    "space": ["star galaxy space", "space robot adventure", "galaxy saga"],
    "food": ["cooking kitchen recipe", "food guide", "kitchen classic"],
    "sports": ["football running", "sports fitness guide", "running story"],
}


def toy_samples(n: int, seed: int = 0, domains=("books", "movies", "music")) -> list[Sample]:
    """Samples whose label follows whether the history's theme matches the item's theme."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user_theme, item_theme = rng.choice(list(THEMES)), rng.choice(list(THEMES))
        label = int(user_theme == item_theme) if rng.random() < 0.85 else int(rng.random() < 0.5)
        history = [rng.choice(THEMES[user_theme]) for _ in range(rng.randint(0, 3))]
        out.append(Sample(domain=rng.choice(domains), user_id=f"u{rng.randint(0, 50)}", item_id=f"i{i}",
                          label=label, timestamp=i, title=rng.choice(THEMES[item_theme]),
                          brand=rng.choice(["acme", None]), price=rng.choice(["9.99", None]), history=history))
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), "bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-llama"), "llama"))


@pytest.fixture
def tiny_config(tiny_bert) -> ModelConfig:
    return ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64)


@pytest.fixture
def fast_train_config() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=16, head_lr=(1e-4, 3e-3), backbone_lr=(1e-4, 1e-3))


def build_home(backbone: str, home: Path, seed: int = 0) -> Path:
    """A tiny trained core with DSNs for books, movies and music, saved as a UniCTR home."""
    from unictr_core.fit.training import train_unictr
    from unictr_core.store.writes import save_trained

    config = ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64)
    train_config = TrainConfig(epochs=1, batch_size=16, head_lr=(1e-4, 3e-3), backbone_lr=(1e-4, 1e-3), max_steps=3,
                               seed=seed, dsn="standalone")   # the paper's joint DSNs, next to residual added ones
    result = train_unictr(toy_samples(60), toy_samples(30, seed=1), config, train_config, progress=False)
    save_trained(result.model, home, domain_metrics=result.valid_metrics)
    return home


@pytest.fixture(scope="module")
def trained_home(tiny_bert, tmp_path_factory) -> Path:
    return build_home(tiny_bert, tmp_path_factory.mktemp("home") / "home")


@pytest.fixture
def home(trained_home, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def toys_file(tmp_path_factory) -> Path:
    from unictr_core.data.data_io import write_samples

    path = tmp_path_factory.mktemp("data") / "toys.jsonl"
    write_samples(path, toy_samples(80, seed=3, domains=("toys",)))
    return path
