"""UniCTR: multi-domain CTR prediction with a language-model backbone (Uni-CTR).

The code is in layers; their order, lowest first, is defined once in ``unictr_core.layers.LAYERS``
(a module imports only from its own layer and the layers before it).
"""

__version__ = "0.1.0"
