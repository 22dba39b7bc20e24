"""ID-feature CTR baselines (single-domain DeepFM, DCN, AutoInt, xDeepFM, PNN; multi-domain Shared-Bottom, MMoE,
PLE, STAR), their feature encoder and the shared trainer. Models are registered through the
``register_baselines`` plugin hook (built-in: :mod:`unictr_plugins.baselines`)."""

from unictr_core.baselines.base import BaselineModel
from unictr_core.baselines.features import FeatureEncoder, FeatureSpec
from unictr_core.baselines.registry import BaselineInfo, baselines
from unictr_core.baselines.trainer import (BaselineSettings, DomainScore, FittedBaseline, fit_baseline,
                                           score_by_domain)

__all__ = [
    "BaselineInfo", "BaselineModel", "BaselineSettings", "DomainScore", "FeatureEncoder", "FeatureSpec",
    "FittedBaseline", "baselines", "fit_baseline", "score_by_domain",
]
