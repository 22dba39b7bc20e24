"""Module paths of earlier releases as aliases: ``import unictr_core.training`` gives ``unictr_core.fit.training``.

The modules moved into the layer folders (``data/``, ``modeling/``, ``fit/``, ``store/``); scripts, notebooks
and third-party plugins that import them by their former flat paths get the very same module object (so
patching it in a test patches the real one). Installed by ``unictr_core/__init__.py``; new code imports the
new paths (``tests/test_layers.py`` checks that no module of unictr_core uses a former one).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

FORMER_PATHS = {
    "unictr_core.schema": "unictr_core.data.schema",
    "unictr_core.data_io": "unictr_core.data.data_io",
    "unictr_core.dataset": "unictr_core.data.dataset",
    "unictr_core.synthetic": "unictr_core.data.synthetic",
    "unictr_core.history": "unictr_core.data.history",
    "unictr_core.prompts": "unictr_core.data.prompts",
    "unictr_core.domain_defs": "unictr_core.data.domain_defs",
    "unictr_core.yaml_io": "unictr_core.data.yaml_io",
    "unictr_core.atomic": "unictr_core.data.files",
    "unictr_core.tables": "unictr_core.data.tables",
    "unictr_core.backbone": "unictr_core.modeling.backbone",
    "unictr_core.backbone_cache": "unictr_core.modeling.backbone_cache",
    "unictr_core.tiny": "unictr_core.modeling.tiny",
    "unictr_core.networks": "unictr_core.modeling.networks",
    "unictr_core.model": "unictr_core.modeling.model",
    "unictr_core.ids": "unictr_core.modeling.ids",
    "unictr_core.batching": "unictr_core.modeling.batching",
    "unictr_core.precision": "unictr_core.modeling.precision",
    "unictr_core.hidden_cache": "unictr_core.modeling.hidden_cache",
    "unictr_core.predict": "unictr_core.modeling.predict",
    "unictr_core.training": "unictr_core.fit.training",
    "unictr_core.domain_training": "unictr_core.fit.domain_training",
    "unictr_core.distributed": "unictr_core.fit.distributed",
    "unictr_core.report": "unictr_core.fit.report",
    "unictr_core.home_store": "unictr_core.store.snapshots",
}


class FormerPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a former path and hands out the module that now lives at the new one."""

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in FORMER_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(FORMER_PATHS[spec.name])
        self._specs[module.__name__] = module.__spec__  # the import system overwrites it with the alias's spec
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._specs[module.__name__]  # keep the module's own spec (its real name and file)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, FormerPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, FormerPathFinder())
