"""The Uni-CTR model: masked loss, padding invariance, encoder and decoder backbones."""

from __future__ import annotations

import pytest
import torch

from conftest import toy_samples
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.fit.loop import ctr_loss
from unictr_core.modeling.predict import tokenize_samples, predict_samples
from unictr_core.data.schema import Sample
from unictr_core.fit.training import build_model, train_unictr


def test_one_domain_batch_leaves_other_dsns_untouched(tiny_config):
    model = build_model(tiny_config, ["books", "movies", "music"])
    model.train()
    samples = [s for s in toy_samples(60) if s.domain == "books"][:8]
    batch = tokenize_samples(model, samples).batch(range(len(samples)))
    loss = ctr_loss(model(batch.input_ids, batch.attention_mask, batch.domains), batch.labels)
    loss.backward()
    for domain in ("movies", "music"):
        for name, p in model.dsns[domain].named_parameters():
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, f"{domain}.{name} got a gradient"
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.dsns["books"].parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.general.parameters())
    lora = [p for n, p in model.backbone.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in lora)
    frozen = [p for n, p in model.backbone.named_parameters() if "lora_" not in n]
    assert all(p.grad is None for p in frozen)


def test_mixed_batch_runs_each_dsn_only_on_its_rows(tiny_config, monkeypatch):
    model = build_model(tiny_config, ["books", "movies", "music"])
    seen = {}
    for domain, dsn in model.dsns.items():
        original = dsn.forward

        def spy(states, mask, general_logits=None, _d=domain, _f=original, **kwargs):
            seen[_d] = mask.shape[0]
            return _f(states, mask, general_logits, **kwargs)

        monkeypatch.setattr(dsn, "forward", spy)
    samples = [s for s in toy_samples(40) if s.domain in ("books", "movies")][:10]
    predict_samples(model, samples, batch_size=64)
    assert set(seen) == {"books", "movies"}
    assert seen["books"] == sum(s.domain == "books" for s in samples)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_padding_does_not_change_a_prediction(backbone, request):
    config = ModelConfig(backbone=request.getfixturevalue(backbone), tower_dims=[16, 8], max_length=128)
    model = build_model(config, ["books"])
    short = Sample("books", "u1", "i1", title="space robot", history=[])
    long = Sample("books", "u2", "i2", title="galaxy saga " * 20, history=["cooking kitchen recipe"] * 5)
    alone = predict_samples(model, [short]).probs[0]
    # batch_size=1 would avoid padding: force both into one batch, the short one padded to the long one
    encoded = tokenize_samples(model, [short, long])
    assert len(encoded.token_ids[1]) > 3 * len(encoded.token_ids[0])
    together = predict_samples(model, [short, long], batch_size=2).probs[0]
    assert abs(alone - together) < 1e-5
    general_alone = predict_samples(model, [Sample("unseen", "u", "i", title="x")]).general_probs[0]
    general_batch = predict_samples(model, [Sample("unseen", "u", "i", title="x"), long], batch_size=2)
    assert abs(general_alone - general_batch.general_probs[0]) < 1e-5


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_encoder_and_decoder_backbones_train(backbone, request, fast_train_config):
    config = ModelConfig(backbone=request.getfixturevalue(backbone), tower_dims=[16, 8], max_length=64)
    fast_train_config.max_steps = 3
    data = toy_samples(80)
    model = build_model(config, ["books", "movies", "music"], seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_unictr(data, toy_samples(40, seed=1), config, fast_train_config, progress=False)
    after = dict(result.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("lora_" in n for n in changed)
    assert any(n.startswith("general.") for n in changed)
    assert all("lora_" in n or not n.startswith("backbone.") for n in changed), "frozen backbone weights moved"
    assert result.model.backbone_info.is_decoder == (backbone == "tiny_llama")


def test_same_seed_gives_the_same_model(tiny_config, fast_train_config):
    fast_train_config.max_steps = 4
    runs = [train_unictr(toy_samples(80), toy_samples(30, seed=1), tiny_config, fast_train_config, progress=False)
            for _ in range(2)]
    a, b = (dict(r.model.named_parameters()) for r in runs)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_no_batchnorm_anywhere_in_the_heads(tiny_config):
    model = build_model(tiny_config, ["books", "movies"])
    heads = [model.general, *model.dsns.values()]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for h in heads for m in h.modules())


@pytest.mark.parametrize("kind", ["none", "mlp", "attention", "transformer"])
def test_every_ladder_kind_builds_and_predicts(kind, tiny_bert):
    config = ModelConfig(backbone=tiny_bert, tower_dims=[8], ladder_kind=kind, ladder_freq=2)
    model = build_model(config, ["books"])
    expected_blocks = 0 if kind == "none" else 2  # 4 layers / freq 2
    assert len(model.dsns["books"].ladders) == expected_blocks
    probs = predict_samples(model, toy_samples(5, domains=("books",))).probs
    assert ((probs > 0) & (probs < 1)).all()


def test_long_prompt_drops_oldest_history_first(tiny_config):
    model = build_model(tiny_config, ["books"])
    history = ["cooking kitchen recipe"] * 20 + ["galaxy saga"] * 20  # oldest first
    sample = Sample("books", "u1", "i1", title="space robot", history=history)
    ids = tokenize_samples(model, [sample]).token_ids[0]
    assert len(ids) <= tiny_config.max_length
    text = model.backbone_info.tokenizer.decode(ids)
    assert "space robot" in text and text.endswith(". [SEP]"), "the current item must survive"
    assert "galaxy saga" in text and "cooking" not in text, "the oldest history goes first"
