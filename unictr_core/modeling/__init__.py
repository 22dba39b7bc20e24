"""Backbones, the Uni-CTR networks and model, batching, the hidden-state cache and prediction."""
