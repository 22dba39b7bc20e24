"""UniCTR: multi-domain CTR prediction with a language-model backbone (Uni-CTR).

The public surface for Python users and plugin authors is what this package exports (``__all__``):
the use cases (:mod:`unictr_core.workflows`), their settings and results, sample reading, and what a
plugin needs (``hookimpl``, ``DomainSpec``, ``BackboneSpec``, ``PromptTemplate``)::

    from unictr_core import DomainSpec, hookimpl, plan_domain_add, add_domain, predict

The names are imported on first use, so ``import unictr_core`` stays light (no torch). Everything else
lives in the layers, whose order, lowest first, is defined once in ``unictr_core.layers.LAYERS`` (a
module imports only from its own layer and the layers before it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # settings
    "ModelConfig": "unictr_core.config", "TrainConfig": "unictr_core.config",
    "ServeSettings": "unictr_core.config", "DOMAIN_ADD_DEFAULTS": "unictr_core.config",
    "DEFAULT_PRECISION": "unictr_core.config",
    # the use cases and their results
    **{name: "unictr_core.workflows" for name in (
        "plan_training", "train_home", "plan_domain_add", "train_dsn", "add_domain", "remove_domain", "evaluate",
        "predict", "rank", "TrainPlan", "TrainHomeResult", "DomainData", "DomainAddPlan", "DomainAddResult",
        "DomainRemoveResult", "EvaluationResult", "PredictionResult", "RankResult")},
    "DomainAddOptions": "unictr_core.fit.domain_training",
    # samples and data sets
    "Sample": "unictr_core.data.schema", "DataError": "unictr_core.data.schema",
    "read_samples": "unictr_core.data.data_io", "write_samples": "unictr_core.data.data_io",
    "load_dataset": "unictr_core.data.dataset", "write_builtin_dataset": "unictr_core.data.synthetic",
    # plugins
    "hookimpl": "unictr_core.hookspecs", "DomainSpec": "unictr_core.plugins", "BackboneSpec": "unictr_core.plugins",
    "PromptTemplate": "unictr_core.data.prompts", "read_template_file": "unictr_core.data.prompts",
    "read_domain_record": "unictr_core.store.records", "ArtifactError": "unictr_core.store.layout",
    # a home's model, for scripts that predict themselves
    "load_model": "unictr_core.store.loading",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unictr_core' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
