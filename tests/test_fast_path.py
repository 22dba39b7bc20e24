"""The prediction fast path: LoRA merged once, weights in the serving precision, same outputs as before."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import toy_samples
from unictr_core.config import ModelConfig
from unictr_core.modeling.backbone import load_backbone
from unictr_core.modeling.fast_path import describe, prepare_for_prediction
from unictr_core.modeling.model import UniCTRModel
from unictr_core.modeling.predict import predict_samples

FP32_TOLERANCE = 1e-5  # merged vs unmerged, fp32: float rounding only
BF16_TOLERANCE = 2e-2  # bf16 weights vs fp32, in probability, on tiny random backbones


def model_with_lora(backbone: str, seed: int = 0) -> UniCTRModel:
    """A model whose LoRA weights are non-zero (a fresh LoRA's B is zero, which would make merging trivial)."""
    torch.manual_seed(seed)
    model = UniCTRModel(load_backbone(backbone), ModelConfig(backbone=backbone, tower_dims=[16, 8], max_length=64),
                        domains=("books", "movies"))
    with torch.no_grad():
        for name, param in model.lora_state().items():
            param.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(params=["tiny_bert", "tiny_llama"])
def model(request) -> UniCTRModel:
    return model_with_lora(request.getfixturevalue(request.param))


def test_fp32_merged_predicts_what_the_unmerged_model_predicts(model):
    samples = toy_samples(24, seed=3, domains=("books", "movies", "toys"))
    before = predict_samples(model, samples, batch_size=8)
    fast = prepare_for_prediction(copy.deepcopy(model), "fp32")
    assert not hasattr(fast.backbone, "merge_and_unload") and fast.lora_state() == {}
    after = predict_samples(fast, samples, batch_size=8)
    np.testing.assert_allclose(after.probs, before.probs, atol=FP32_TOLERANCE)
    np.testing.assert_allclose(after.general_probs, before.general_probs, atol=FP32_TOLERANCE)
    without_lora = copy.deepcopy(model)  # the LoRA weights matter far more than the tolerance: a real check
    with torch.no_grad():
        for name, param in without_lora.lora_state().items():
            if "lora_B" in name:
                param.zero_()
    assert np.abs(predict_samples(without_lora, samples, batch_size=8).probs - before.probs).max() > 100 * FP32_TOLERANCE
    assert (after.zero_shot == before.zero_shot).all() and after.zero_shot.sum() > 0
    assert describe(fast) == {"precision": "fp32", "quantize": "none", "lora_merged": True, "weights_dtype": "float32"}


def test_bf16_weights_predict_within_tolerance_without_autocast(model):
    samples = toy_samples(24, seed=4, domains=("books", "movies"))
    reference = predict_samples(model, samples, batch_size=8)
    fast = prepare_for_prediction(copy.deepcopy(model), "bf16")
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert describe(fast)["weights_dtype"] == "bfloat16"
    got = predict_samples(fast, samples, batch_size=8)
    assert np.abs(got.probs - reference.probs).max() < BF16_TOLERANCE
    with pytest.raises(ValueError, match="prepared for bf16"):
        predict_samples(fast, samples, precision="fp32")


def test_a_prepared_model_is_frozen_and_prepared_once(tiny_bert):
    fast = prepare_for_prediction(model_with_lora(tiny_bert), "fp32")
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    with pytest.raises(ValueError, match="already prepared"):
        prepare_for_prediction(fast, "fp32")
    with pytest.raises(ValueError, match="cannot be combined"):
        prepare_for_prediction(model_with_lora(tiny_bert), "bf16", "int8")
