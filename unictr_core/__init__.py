"""UniCTR: multi-domain CTR prediction with a language-model backbone (Uni-CTR).

Layers, lowest first (a module imports only from its own layer and those above it):

- ``config``: every setting and its default (dataclasses), read by all layers and the CLI
- ``data/``: samples, files, datasets, prompt templates
- ``modeling/``: backbones, the Uni-CTR networks and model, batching, the hidden-state cache, prediction
- ``fit/``: the training loop (loss, optimiser step, early stopping), joint training, domain add, metrics
- ``store/``: a home on disk (snapshots, lock, core and bundles, the domain registry)
- ``plugins`` / ``hookspecs``: the plugin manager and the hooks plugins implement
- ``workflows``: the use cases (train a home, add / remove a domain, evaluate, predict), printing nothing
- ``adapters/``, ``baselines/``, ``serving/``: public data sets, the baseline models, the online server
"""

__version__ = "0.1.0"

from unictr_core import _former_paths  # noqa: E402

_former_paths.install()
