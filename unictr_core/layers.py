"""The layer order of ``unictr_core``, lowest first: the one definition.

A module imports only from its own layer and the layers before it, never a later one
(``tests/test_layers.py`` checks every import against this tuple; ``docs/development.md`` quotes it).
Each entry names the top-level modules and packages of ``unictr_core`` in that layer:

- ``config``, ``metrics``, ``layers``: every setting and its default; AUC, logloss, RelaImpr; this order
- ``data``: samples, files, datasets, prompt templates
- ``adapters``, ``hookspecs``, ``plugins``: public data sets; the hooks and the plugin manager
- ``modeling``: backbones, the Uni-CTR networks and model, batching, the hidden-state cache, prediction
- ``fit``: the training loop, joint training, domain add
- ``baselines``: the baseline models and their trainer
- ``store``: a home on disk (snapshots, lock, core and bundles, the domain registry)
- ``workflows``, ``benchmark``, ``prompt_preview``: the use cases, printing nothing
- ``serving``: the online server
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "metrics", "layers"),
    ("data",),
    ("adapters", "hookspecs", "plugins"),
    ("modeling",),
    ("fit",),
    ("baselines",),
    ("store",),
    ("workflows", "benchmark", "prompt_preview"),
    ("serving",),
)


def layer_of(module: str) -> int:
    """The rank in :data:`LAYERS` of a ``unictr_core`` module (``unictr_core.store.registry`` -> 6).

    :raises KeyError: for a module in no layer
    """
    top = module.split(".")[1]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise KeyError(f"{module}: in no layer of unictr_core.layers.LAYERS (add it where it belongs)")
