"""Built-in baselines: single-domain DeepFM, DCN, AutoInt, xDeepFM, PNN; multi-domain Shared-Bottom, MMoE,
PLE, STAR; and the floors every model must beat, the user's and the item's historical positive rate. A
third-party plugin adds its own the same way: ``register(name, factory)`` where ``factory(spec, **hparams)``
returns a :class:`unictr_core.baselines.BaselineModel`.

The models (and torch) are imported when the hook runs, not when the plugin loads, so commands that never
ask for baselines (``unictr plugins``, ``domain list``) stay fast."""

from __future__ import annotations

import importlib

from unictr_core.hookspecs import hookimpl

BUILTIN = {  # name -> "module:class"
    "deepfm": "unictr_core.baselines.single_domain:DeepFM",
    "dcn": "unictr_core.baselines.single_domain:DCN",
    "autoint": "unictr_core.baselines.single_domain:AutoInt",
    "xdeepfm": "unictr_core.baselines.single_domain:XDeepFM",
    "pnn": "unictr_core.baselines.single_domain:PNN",
    "shared_bottom": "unictr_core.baselines.multi_domain:SharedBottom",
    "mmoe": "unictr_core.baselines.multi_domain:MMoE",
    "ple": "unictr_core.baselines.multi_domain:PLE",
    "star": "unictr_core.baselines.multi_domain:STAR",
    "user_rate": "unictr_core.baselines.floors:UserRate",
    "item_rate": "unictr_core.baselines.floors:ItemRate",
}


@hookimpl
def register_baselines(register):
    for name, target in BUILTIN.items():
        module, attribute = target.split(":")
        register(name, getattr(importlib.import_module(module), attribute))
