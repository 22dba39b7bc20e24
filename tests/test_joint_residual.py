"""`unictr train --dsn residual|standalone`: residual DSNs in joint training start as the general network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.store.records import read_domain_record
from unictr_core.store.writes import save_trained
from unictr_core.fit.loop import ctr_loss
from unictr_core.modeling.predict import tokenize_samples, predict_samples
from unictr_core.store.loading import load_model
from unictr_core.fit.training import build_model, train_unictr

runner = CliRunner()


def test_residual_dsns_start_as_the_general_network_and_train_only_their_correction(tiny_config):
    model = build_model(tiny_config, ["books", "movies"], residual_dsns=True)
    samples = [s for s in toy_samples(40) if s.domain in ("books", "movies")][:12]
    before = predict_samples(model, samples)
    np.testing.assert_array_equal(before.probs, before.general_probs)   # zero-initialised last layer
    model.train()
    batch = tokenize_samples(model, samples).batch(range(len(samples)))
    out = model(batch.input_ids, batch.attention_mask, batch.domains)
    # the DSN loss does not reach the general network: only its own BCE does
    general_grads = torch.autograd.grad(ctr_loss(out, batch.labels), list(model.general.parameters()),
                                        retain_graph=True)
    own = torch.nn.functional.binary_cross_entropy_with_logits(out.general_logits, batch.labels.float())
    expected = torch.autograd.grad(own, list(model.general.parameters()))
    for got, want in zip(general_grads, expected):
        torch.testing.assert_close(got, want)


def test_joint_training_with_residual_dsns_round_trips(tiny_config, fast_train_config, tmp_path):
    config = dataclasses.replace(fast_train_config, dsn="residual", max_steps=4)
    result = train_unictr(toy_samples(60), toy_samples(30, seed=1), tiny_config, config, progress=False)
    assert all(dsn.residual for dsn in result.model.dsns.values())
    samples = toy_samples(30, seed=2)
    trained = predict_samples(result.model, samples)
    assert not np.array_equal(trained.probs, trained.general_probs)     # the corrections learned something
    save_trained(result.model, tmp_path / "home")
    assert read_domain_record(tmp_path / "home" / "domains" / "books")["dsn"] == {
        "residual": True, "stats": False, "calibration": False}
    model, notes = load_model(tmp_path / "home")
    assert notes == [] and all(dsn.residual for dsn in model.dsns.values())
    np.testing.assert_allclose(predict_samples(model, samples).probs, trained.probs, rtol=1e-6)


def test_standalone_stays_available_and_a_bad_kind_is_refused(tiny_config, fast_train_config, tiny_bert, tmp_path):
    config = dataclasses.replace(fast_train_config, dsn="standalone", max_steps=1)
    result = train_unictr(toy_samples(30), toy_samples(30, seed=1), tiny_config, config, progress=False)
    assert not any(dsn.residual for dsn in result.model.dsns.values())
    with pytest.raises(ValueError, match="dsn must be one of residual, standalone"):
        train_unictr(toy_samples(30), toy_samples(30, seed=1), tiny_config,
                     dataclasses.replace(config, dsn="both"), progress=False)
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--home", str(tmp_path / "h"), "--backbone", tiny_bert,
                                 "--dsn", "sideways", "--max-steps", "1"])
    assert result.exit_code != 0 and "dsn must be one of residual, standalone" in result.output
