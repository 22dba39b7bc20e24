"""Built-in baselines: single-domain DeepFM, DCN, AutoInt, xDeepFM, PNN; multi-domain Shared-Bottom, MMoE,
PLE, STAR; and the floors every model must beat, the user's and the item's historical positive rate. A
third-party plugin adds its own the same way: ``register(name, factory)`` where ``factory(spec, **hparams)``
returns a :class:`unictr_core.baselines.BaselineModel`."""

from __future__ import annotations

from unictr_core.baselines.floors import ItemRate, UserRate
from unictr_core.baselines.multi_domain import MMoE, PLE, STAR, SharedBottom
from unictr_core.baselines.single_domain import DCN, PNN, AutoInt, DeepFM, XDeepFM
from unictr_core.hookspecs import hookimpl

BUILTIN = {
    "deepfm": DeepFM,
    "dcn": DCN,
    "autoint": AutoInt,
    "xdeepfm": XDeepFM,
    "pnn": PNN,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "star": STAR,
    "user_rate": UserRate,
    "item_rate": ItemRate,
}


@hookimpl
def register_baselines(register):
    for name, factory in BUILTIN.items():
        register(name, factory)
