"""The prediction fast path: a model prepared once for prediction only (`predict`, `evaluate`, `serve`).

:func:`prepare_for_prediction` does, once, what would otherwise cost something in every batch:

* LoRA is merged into the backbone's weights (peft ``merge_and_unload``): one matrix product per
  projection instead of the base product plus the two low-rank ones;
* the weights are held in the serving precision: with ``bf16`` every parameter (backbone and heads)
  becomes bfloat16, so no autocast casts weights in every call; buffers (e.g. rotary frequencies)
  stay as they are; with ``--quantize int8`` the backbone's linear layers become dynamic int8 (LoRA
  merged first, see :func:`unictr_core.modeling.precision.quantize_int8`);
* the model is frozen (``requires_grad`` off, eval mode); :func:`unictr_core.modeling.predict.predict_encoded`
  runs a prepared model under ``torch.inference_mode`` without autocast.

Outputs equal the unprepared model's: fp32 merged vs unmerged to float rounding (tested to 1e-5 in
probability), bf16 weights vs fp32 to the rounding of bf16 (tested to 2e-2 on tiny random backbones; the
issue measured max |Δp| 1e-4 on minilm). A prepared model can no longer be trained or saved: only
models loaded for prediction are prepared, never those of `train` or `domain add`.
"""

from __future__ import annotations

import torch
from torch import nn

from unictr_core.config import DEFAULT_PRECISION, QUANTIZE
from unictr_core.modeling import precision as precisions

WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def merge_lora(model) -> None:
    """Fold the LoRA weights into the backbone's own (a model without LoRA is left as it is)."""
    if hasattr(model.backbone, "merge_and_unload"):
        model.backbone = model.backbone.merge_and_unload()


def cast_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Every floating-point parameter of ``module`` in ``dtype``; buffers keep theirs."""
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def prepare_for_prediction(model, precision: str = DEFAULT_PRECISION, quantize: str = "none"):
    """Prepare ``model`` (a UniCTRModel) in place for prediction only; returns it.

    Sets ``model.serving_precision`` to the resolved precision (``fp32`` or ``bf16``).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}, got '{quantize}'")
    if getattr(model, "serving_precision", None) is not None:
        raise ValueError("this model is already prepared for prediction")
    device = next(model.parameters()).device
    resolved = precisions.resolve(precision, device, quantize == "int8")
    if quantize == "int8":
        precisions.quantize_int8(model)  # merges LoRA first
    else:
        merge_lora(model)
    model.requires_grad_(False)
    model.eval()
    model.serving_precision = resolved
    match_serving_dtype(model)
    return model


def match_serving_dtype(model) -> None:
    """Cast what was attached to a prepared model since (new DSNs) to its serving precision."""
    precision = getattr(model, "serving_precision", None)
    if precision is None:
        return
    cast_parameters(model, WEIGHT_DTYPES[precision])
    model.requires_grad_(False)
    model.eval()


def describe(model) -> dict:
    """What a prepared model runs: precision, quantization, LoRA merged; for `/v1/domains` and `/metrics`."""
    precision = getattr(model, "serving_precision", None)
    return {"precision": precision or "unprepared", "quantize": "int8" if model.quantized else "none",
            "lora_merged": precision is not None and not hasattr(model.backbone, "merge_and_unload"),
            "weights_dtype": str(next(model.general.parameters()).dtype).replace("torch.", "")}
