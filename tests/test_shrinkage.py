"""Each residual DSN's correction shrunk on its validation rows: the fit, the folding into the weights, joint
training, the stored home and the CLI switch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.fit.shrinkage import SCALES, fit_shrinkage, logit
from unictr_core.config import TrainConfig
from unictr_core.fit.training import build_model, train_unictr
from unictr_core.modeling.networks import DsnSpec
from unictr_core.modeling.predict import domain_metrics, predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.records import read_domain_record
from unictr_core.store.writes import save_trained

runner = CliRunner()


def _rows(seed: int = 0, n: int = 2000):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(int)
    return rng, signal, labels


def test_an_informative_correction_is_kept_and_noise_is_dropped():
    rng, signal, labels = _rows()
    general = np.zeros_like(signal)
    kept = fit_shrinkage(general, general + signal, labels)
    assert kept.scale == 1.0 and kept.logloss_after == kept.logloss_before and kept.rows == signal.size
    dropped = fit_shrinkage(signal, signal + 3 * rng.normal(size=signal.size), labels)
    assert dropped.scale == 0.0 and dropped.logloss_after < dropped.logloss_before


def test_an_over_confident_correction_is_shrunk_part_way():
    _, signal, labels = _rows(1)
    fitted = fit_shrinkage(0.5 * signal, 2.0 * signal, labels)   # the truth is general + 1/3 of the correction
    assert fitted.scale in (0.3, 0.4) and fitted.logloss_after < fitted.logloss_before
    assert fitted.scale in SCALES


def test_one_label_class_or_no_rows_keep_the_dsn_and_bad_lengths_are_refused():
    assert fit_shrinkage([0.1, 0.2], [1.0, 2.0], [1, 1]).scale == 1.0
    assert fit_shrinkage([], [], []).scale == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        fit_shrinkage([0.1, 0.2], [1.0], [1, 0])


def test_logit_inverts_the_sigmoid_and_stays_finite_at_0_and_1():
    z = np.array([-5.0, 0.0, 3.0])
    np.testing.assert_allclose(logit(1 / (1 + np.exp(-z))), z, atol=1e-9)
    assert np.isfinite(logit([0.0, 1.0])).all()


@pytest.mark.parametrize("stats", [False, True])
def test_scaling_a_residual_dsn_scales_its_correction_exactly(tiny_config, stats):
    model = build_model(tiny_config, ["books"], residual_dsns=DsnSpec(residual=True, stats=stats))
    dsn = model.dsns["books"]
    with torch.no_grad():
        for p in dsn.parameters():
            p.add_(0.3 * torch.randn_like(p))                # a DSN whose correction is far from zero
    samples = [s for s in toy_samples(40) if s.domain == "books"][:10]
    if stats:
        dsn.counts.fit(samples)
    before = predict_samples(model, samples)
    general, correction = logit(before.general_probs), logit(before.probs) - logit(before.general_probs)
    assert np.abs(correction).max() > 0.05
    dsn.scale_correction(0.4)
    after = predict_samples(model, samples)
    np.testing.assert_allclose(logit(after.probs), general + 0.4 * correction, atol=1e-4)
    np.testing.assert_array_equal(after.general_probs, before.general_probs)
    dsn.scale_correction(0.0)
    np.testing.assert_array_equal(predict_samples(model, samples).probs, before.general_probs)


def test_only_a_residual_dsn_in_0_1_can_be_scaled(tiny_config):
    standalone = build_model(tiny_config, ["books"], residual_dsns=False).dsns["books"]
    with pytest.raises(ValueError, match="only a residual DSN"):
        standalone.scale_correction(0.5)
    residual = build_model(tiny_config, ["books"], residual_dsns=True).dsns["books"]
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got 1.5"):
        residual.scale_correction(1.5)


def _train(tiny_config, fast_train_config, **changes):
    # a peak rate high enough that some DSN's correction overfits the 30 training rows of its domain
    config = dataclasses.replace(fast_train_config, dsn="residual", epochs=2, head_lr=(1e-4, 2e-2), **changes)
    return train_unictr(toy_samples(90), toy_samples(60, seed=1), tiny_config, config, progress=False)


def test_joint_training_shrinks_each_dsn_on_validation_and_reports_it(tiny_config, fast_train_config, tmp_path):
    shrunk = _train(tiny_config, fast_train_config)
    plain = _train(tiny_config, fast_train_config, dsn_shrinkage=False)
    assert plain.shrinkage == {} and all("dsn_shrinkage" not in m for m in plain.valid_metrics.values())
    assert set(shrunk.shrinkage) == {"books", "movies", "music"}
    assert min(fitted["scale"] for fitted in shrunk.shrinkage.values()) < 1.0   # something to check below
    valid = toy_samples(60, seed=1)
    as_trained = predict_samples(plain.model, valid)
    now = predict_samples(shrunk.model, valid)
    np.testing.assert_array_equal(now.general_probs, as_trained.general_probs)   # same run up to the shrinkage
    domains = np.array([s.domain for s in valid])
    for domain, fitted in shrunk.shrinkage.items():
        rows = domains == domain
        assert shrunk.valid_metrics[domain]["dsn_shrinkage"] == fitted["scale"]
        general = logit(as_trained.general_probs[rows])
        expected = general + fitted["scale"] * (logit(as_trained.probs[rows]) - general)
        np.testing.assert_allclose(logit(now.probs[rows]), expected, atol=1e-4)
        assert fitted["valid_logloss_after"] <= fitted["valid_logloss_before"]
    # the reported validation metrics are those of the shrunk model as stored
    fresh = domain_metrics(valid, now)
    for domain, m in shrunk.valid_metrics.items():
        assert m["auc"] == pytest.approx(fresh[domain]["auc"], abs=1e-6)
        assert m["logloss"] == pytest.approx(fresh[domain]["logloss"], abs=1e-6)
    save_trained(shrunk.model, tmp_path / "home")
    loaded, _ = load_model(tmp_path / "home")
    np.testing.assert_allclose(predict_samples(loaded, valid).probs, now.probs, rtol=1e-6)


def test_train_cli_switches_the_shrinkage_off_and_shows_it(tiny_bert, tmp_path):
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    common = ["train", "--data", str(data), "--backbone", tiny_bert, "--epochs", "1", "--batch-size", "16",
              "--max-length", "64", "--tower", "16,8", "--max-steps", "2"]
    tables = {}
    for name, switch in (("on", []), ("off", ["--no-dsn-shrinkage"])):
        result = runner.invoke(app, [*common, "--home", str(tmp_path / name), *switch])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        start = next(i for i, line in enumerate(lines) if "DSN kept" in line)
        tables[name] = [line.split()[-1] for line in lines[start + 2:] if line and not line.startswith("best epoch")]
    assert tables["off"] and set(tables["off"]) == {"-"}
    assert len(tables["on"]) == len(tables["off"]) and all(float(kept) in SCALES for kept in tables["on"])
    stored = [read_domain_record(bundle)["metrics"] for bundle in sorted((tmp_path / "on" / "domains").iterdir())]
    assert sorted(m["dsn_shrinkage"] for m in stored) == sorted(float(kept) for kept in tables["on"])
    assert all("dsn_shrinkage" not in read_domain_record(bundle)["metrics"]
               for bundle in (tmp_path / "off" / "domains").iterdir())


def test_domain_add_shrinks_the_new_dsn_before_its_calibration(home, monkeypatch):
    """The wiring: the scale chosen on the validation part is folded into the DSN, then the calibration is fitted
    on the shrunk logits (the choice itself is tested above; here it is fixed at 0.3)."""
    from unictr_core.fit import domain_training
    from unictr_core.fit.domain_training import DomainAddOptions, train_domain

    chosen = []

    def fixed(general, dsn, labels):
        chosen.append(fit_shrinkage(general, dsn, labels))
        return dataclasses.replace(chosen[-1], scale=0.3)

    data = toy_samples(90, seed=13, domains=("toys",))
    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=3, head_lr=(3e-5, 1e-2))
    results = {}
    for shrink in (True, False):
        model, _ = load_model(home)
        monkeypatch.setattr(domain_training, "fit_shrinkage", fixed)
        results[shrink] = (train_domain(model, "toys", data[:50], data[50:70], data[70:],
                                        config=dataclasses.replace(config, dsn_shrinkage=shrink),
                                        options=DomainAddOptions(progress=False)), model)
    (shrunk, model), (plain, plain_model) = results[True], results[False]
    assert len(chosen) == 1 and plain.shrinkage == {}      # not called with --no-dsn-shrinkage
    assert shrunk.shrinkage["scale"] == 0.3 and shrunk.shrinkage["valid_rows"] == 20
    assert shrunk.best_epoch == plain.best_epoch >= 1
    samples = toy_samples(20, seed=12, domains=("toys",))
    for m in (model, plain_model):
        m.dsns["toys"].calibration.copy_(torch.tensor([1.0, 0.0]))   # compare the DSNs without calibration
    now, before = predict_samples(model, samples), predict_samples(plain_model, samples)
    general = logit(before.general_probs)
    assert np.abs(logit(before.probs) - general).max() > 0.05
    np.testing.assert_allclose(logit(now.probs), general + 0.3 * (logit(before.probs) - general), atol=1e-4)
    assert shrunk.calibration["valid_logloss_before"] != pytest.approx(plain.calibration["valid_logloss_before"])
