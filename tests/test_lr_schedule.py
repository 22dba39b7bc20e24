"""Joint training's learning-rate schedules: the paper's cyclic one (default) and a cosine decay from the peak."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.config import TrainConfig
from unictr_core.fit.training import build_model, make_optimizer, train_unictr

runner = CliRunner()


def _rates(model, config: TrainConfig, steps_per_epoch: int, steps: int) -> list[float]:
    """The heads' learning rate before each of ``steps`` optimiser steps (the scheduler stepped after each)."""
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        scheduler.step()
    rates.append(optimizer.param_groups[-1]["lr"])
    return rates


def test_cyclic_climbs_from_the_base_every_epoch_and_cosine_decays_once_from_the_peak(tiny_config):
    model = build_model(tiny_config, ["books", "movies"])
    base, peak = 1e-4, 1e-2
    cyclic = _rates(model, TrainConfig(epochs=3, head_lr=(base, peak)), steps_per_epoch=10, steps=30)
    assert cyclic[0] == pytest.approx(base) and cyclic[5] == pytest.approx(peak)
    assert cyclic[10] == pytest.approx(base) and cyclic[15] == pytest.approx(peak)  # a new cycle each epoch

    cosine = _rates(model, TrainConfig(epochs=3, head_lr=(base, peak), lr_schedule="cosine"),
                    steps_per_epoch=10, steps=30)
    assert cosine[0] == pytest.approx(peak)
    assert cosine[15] == pytest.approx(base + (peak - base) * 0.5)  # half way: half way down
    assert cosine[30] == pytest.approx(base)
    assert all(a > b for a, b in zip(cosine[:30], cosine[1:31]))  # falls at every step, never climbs again


def test_cosine_ends_at_max_steps_when_that_comes_first(tiny_config):
    model = build_model(tiny_config, ["books"])
    config = TrainConfig(epochs=5, head_lr=(1e-4, 1e-2), lr_schedule="cosine", max_steps=8)
    rates = _rates(model, config, steps_per_epoch=10, steps=8)
    assert rates[0] == pytest.approx(1e-2) and rates[8] == pytest.approx(1e-4)


def test_cosine_trains_and_a_bad_schedule_is_refused(tiny_config, fast_train_config, tiny_bert, tmp_path):
    config = dataclasses.replace(fast_train_config, lr_schedule="cosine", max_steps=2)
    result = train_unictr(toy_samples(30), toy_samples(30, seed=1), tiny_config, config, progress=False)
    assert result.model is not None
    with pytest.raises(ValueError, match="lr_schedule must be one of cyclic, cosine, got 'linear'"):
        train_unictr(toy_samples(30), toy_samples(30, seed=1), tiny_config,
                     dataclasses.replace(config, lr_schedule="linear"), progress=False)
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--home", str(tmp_path / "h"), "--backbone", tiny_bert,
                                 "--lr-schedule", "warm", "--max-steps", "1"])
    assert result.exit_code != 0 and "lr_schedule must be one of cyclic, cosine" in result.output


def test_head_lr_sets_the_peak_and_keeps_the_base_below_it(tiny_config, tmp_path, monkeypatch):
    from unictr_core import workflows
    from unictr_core.config import joint_head_lr

    assert joint_head_lr(5e-4) == (TrainConfig.head_lr[0], 5e-4)
    assert joint_head_lr(1e-6) == (1e-6, 1e-6)  # a peak under the default base: a flat rate, never above the peak
    model = build_model(tiny_config, ["books"])
    rates = _rates(model, TrainConfig(epochs=1, head_lr=joint_head_lr(5e-4), lr_schedule="cosine"), 4, 4)
    assert rates[0] == pytest.approx(5e-4) and rates[4] == pytest.approx(TrainConfig.head_lr[0])
    plans = []
    monkeypatch.setattr(workflows, "train_home", lambda plan, group, on_epoch=None: plans.append(plan))
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--home", str(tmp_path / "h"), "--head-lr", "5e-4"])
    assert result.exit_code == 0, result.output
    assert plans[0].train_config.head_lr == (TrainConfig.head_lr[0], 5e-4)
    bad = runner.invoke(app, ["train", "--data", str(data), "--home", str(tmp_path / "h"), "--head-lr", "-1"])
    assert bad.exit_code != 0 and "--head-lr" in bad.output
