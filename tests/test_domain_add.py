"""`unictr domain add` / `remove`: only the new DSN trains, nothing else changes, writes are atomic and locked."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import toy_samples
from unictr_cli.main import app
from unictr_core.store.artifact import save_domain_bundle
from unictr_core.store.records import read_domain_record
from unictr_core.config import DEFAULT_PRECISION, ModelConfig, TrainConfig
from unictr_core.data.data_io import write_samples
from unictr_core.fit.domain_training import DomainAddOptions, train_domain
from unictr_core.modeling.hidden_cache import build_cache
from unictr_core.modeling.predict import tokenize_samples, predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry, RegistryError
from unictr_core.store.writes import delete_bundle, registry_lock
from unictr_core.store import artifact as store_artifact

runner = CliRunner()


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def predict_per_domain(home: Path, samples, precision: str = "fp32") -> dict:
    """Predictions of each domain's rows, scored on their own (as a caller serving that domain would).

    Scored per domain so that each domain's batches hold the same rows before and after: mixed with other
    domains' rows, batch composition and padding change with their prompts, and float32 backbone arithmetic
    then differs in the last bit (padding independence itself is covered by the model tests, to 1e-5).
    """
    model, notes = load_model(home)
    assert notes == []
    out = {}
    for domain in sorted({s.domain for s in samples}):
        out[domain] = predict_samples(model, [s for s in samples if s.domain == domain], precision=precision)
    return out


def test_add_then_remove_leaves_every_other_domain_bit_identical(home, tmp_path):
    # enough validation rows (30) that a trained standalone DSN can beat its random start, which is scored too
    toys_file = tmp_path / "toys.jsonl"
    write_samples(toys_file, toy_samples(300, seed=3, domains=("toys",)))
    samples = toy_samples(90, seed=7, domains=("books", "movies", "music", "toys"))
    before = predict_per_domain(home, samples)
    before_bf16 = predict_per_domain(home, samples, "bf16")
    assert [d for d, p in before.items() if p.zero_shot.all()] == ["toys"]
    core_before = digests(home / "core")
    kept_before = {d: digests(home / "domains" / d) for d in ("books", "movies")}

    # standalone: a residual DSN may keep its untrained start (= the general network) after one epoch
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "3", "--standalone", "--lr", "1e-2"])
    assert result.exit_code == 0, result.output
    assert "domain 'toys' registered" in result.output and "general network (zero-shot)" in result.output
    assert "floor: user_rate (train part)" in result.output and "floor: item_rate (train part)" in result.output
    stored = Registry.open(home).get("toys").metrics
    assert 0 <= stored["user_rate_test_auc"] <= 1 and 0 <= stored["item_rate_test_auc"] <= 1
    result = runner.invoke(app, ["domain", "remove", "music", "--home", str(home), "--yes"])
    assert result.exit_code == 0, result.output

    after = predict_per_domain(home, samples)
    after_bf16 = predict_per_domain(home, samples, "bf16")
    for domain in ("books", "movies"):
        assert len(after[domain].probs) > 10 and not after[domain].zero_shot.any()
        np.testing.assert_array_equal(after[domain].probs, before[domain].probs)  # bit for bit
        np.testing.assert_array_equal(after[domain].general_probs, before[domain].general_probs)
        # the same guarantee in bf16 (autocast), whose predictions differ from fp32's
        np.testing.assert_array_equal(after_bf16[domain].probs, before_bf16[domain].probs)
        np.testing.assert_array_equal(after_bf16[domain].general_probs, before_bf16[domain].general_probs)
        assert not np.array_equal(after_bf16[domain].probs, after[domain].probs)
    assert after["music"].zero_shot.all()  # no DSN any more: the general network answers
    assert not after["toys"].zero_shot.any()
    np.testing.assert_array_equal(after["toys"].general_probs, before["toys"].general_probs)
    assert not np.array_equal(after["toys"].probs, before["toys"].probs)
    assert digests(home / "core") == core_before
    assert {d: digests(home / "domains" / d) for d in ("books", "movies")} == kept_before
    assert sorted(load_model(home)[0].domains) == ["books", "movies", "toys"]
    assert not (home / "domains" / "music").exists()
    leftovers = [p.name for p in (home / "domains").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not list((home / "generations").glob(".*"))
    record = Registry.open(home).get("toys")
    assert record.local and record.status == "ready"
    assert {"test_auc", "zero_shot_auc", "test_rows"} <= set(record.metrics)


@pytest.mark.parametrize("residual", [False, True])
def test_training_touches_only_the_new_dsn_and_cache_matches_live_backbone(home, residual):
    data = toy_samples(60, seed=11, domains=("toys",))
    train, valid, test = data[:40], data[40:50], data[50:]
    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=3, dsn="residual" if residual else "standalone",
                         cache_dtype="fp32")  # fp32: comparable to 1e-5
    states, losses = {}, {}
    for cache in (True, False):
        model, _ = load_model(home)
        frozen = {k: v.clone() for k, v in model.state_dict().items()}
        result = train_domain(model, "toys", train, valid, test, config=config,
                              options=DomainAddOptions(cache=cache, progress=False))
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in frozen.items()), "a frozen weight changed"
        states[cache] = {k: v for k, v in after.items() if k.startswith("dsn")}
        losses[cache] = [h["train_loss"] for h in result.history]
        assert result.cache == cache and (result.cache_bytes > 0) == cache
        assert result.test["rows"] == 10 and result.test["general_auc"] is not None
        assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.history[0]["train_loss"] is None
    assert states[True].keys() == states[False].keys() and states[True]
    for key in states[True]:
        torch.testing.assert_close(states[True][key], states[False][key], atol=1e-5, rtol=1e-4)
    # the same training run either way (the weights kept may be the untrained start: compare the losses too)
    np.testing.assert_allclose(losses[True][1:], losses[False][1:], rtol=1e-4)
    assert losses[True][1] != losses[True][2]


def test_residual_dsn_starts_as_the_general_network_and_survives_a_round_trip(home, tmp_path):
    model, _ = load_model(home)
    dsn = model.add_domain("toys", spec=True)
    samples = toy_samples(24, seed=5, domains=("toys",))
    untrained = predict_samples(model, samples)
    assert not untrained.zero_shot.any()
    np.testing.assert_array_equal(untrained.probs, untrained.general_probs)  # exactly, before any training
    with torch.no_grad():
        for p in dsn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = predict_samples(model, samples)
    assert not np.allclose(moved.probs, moved.general_probs)
    save_domain_bundle(model, "toys", home / "domains" / "toys", model.core_fingerprint)
    assert read_domain_record(home / "domains" / "toys")["dsn"] == {"residual": True, "stats": False,
                                                                   "calibration": False}
    reloaded, notes = load_model(home)
    assert notes == [] and reloaded.dsns["toys"].residual and not reloaded.dsns["books"].residual
    np.testing.assert_array_equal(predict_samples(reloaded, samples).probs, moved.probs)


def test_residual_add_keeps_the_zero_shot_start_when_no_epoch_beats_it(home):
    model, _ = load_model(home)
    data = toy_samples(60, seed=11, domains=("toys",))
    config = TrainConfig(epochs=2, batch_size=16, patience=5, seed=3, head_lr=(0.0, 0.0))  # nothing can improve
    result = train_domain(model, "toys", data[:40], data[40:50], data[50:], config=config,
                          options=DomainAddOptions(progress=False))
    assert result.best_epoch == 0 and result.valid_auc == result.history[0]["valid_auc"]
    # the start is the general network; its calibration (fitted on validation) keeps the ranking
    assert result.test["auc"] == result.test["general_auc"]
    assert result.calibration["scale"] > 0 and result.calibration["valid_rows"] == 10


def test_an_epoch_worse_calibrated_than_the_start_is_never_kept(home, monkeypatch):
    """A residual DSN's epoch with a better validation AUC but a higher validation logloss than its start (the
    zero-shot prediction) is not kept; the next epoch that is no worse calibrated can be."""
    from unictr_core.fit import domain_training

    scripted = iter([(0.60, 0.60), (0.90, 0.61), (0.70, 0.55)])  # start, epoch 1 (over-confident), epoch 2
    real = domain_training._DomainEpochs.scores

    def scores(self, which, intervals=False):
        out, logits = real(self, which, intervals)
        if which == 1:
            auc, logloss = next(scripted, (out["auc"], out["logloss"]))  # then: the calibration's own call
            out = dict(out, auc=auc, logloss=logloss)
        return out, logits

    monkeypatch.setattr(domain_training._DomainEpochs, "scores", scores)
    model, _ = load_model(home)
    data = toy_samples(60, seed=11, domains=("toys",))
    result = train_domain(model, "toys", data[:40], data[40:50], data[50:],
                          config=TrainConfig(epochs=2, batch_size=16, patience=5, seed=3),
                          options=DomainAddOptions(progress=False))
    assert [r["valid_auc"] for r in result.history] == [0.60, 0.90, 0.70]
    assert result.best_epoch == 2 and result.valid_auc == 0.70


def test_cache_keeps_only_the_dsn_layers_unpadded(home, tmp_path):
    model, _ = load_model(home)
    encoded = tokenize_samples(model, toy_samples(10, seed=2, domains=("toys",)))
    layers = model.dsns["books"].required_layers
    assert layers != list(range(model.num_layers + 1))
    cache = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=4, cache_dtype="fp32"))
    tokens = sum(len(ids) for ids in encoded.token_ids)
    assert cache.nbytes == tokens * len(layers) * model.hidden_size * 4  # unpadded
    hidden, mask = cache.batch([0, 1, 2])
    assert [i for i, h in enumerate(hidden) if h is not None] == layers
    batch = encoded.batch([0, 1, 2])
    with torch.no_grad():
        live = model.encode(batch.input_ids, batch.attention_mask)
    assert torch.equal(mask, batch.attention_mask.bool())
    for layer in layers:
        torch.testing.assert_close(hidden[layer][mask], live[layer][mask], atol=1e-5, rtol=1e-5)
    # fp16 storage: half the bytes, the values to fp16 rounding
    half = build_cache(model, encoded, layers, config=TrainConfig(eval_batch_size=4))
    assert half.storage == "fp16" and half.nbytes * 2 == cache.nbytes
    hidden16, _ = half.batch([0, 1, 2])
    for layer in layers:
        assert hidden16[layer].dtype == torch.float32
        torch.testing.assert_close(hidden16[layer][mask], live[layer][mask], atol=1e-2, rtol=1e-3)


def test_interrupted_add_registers_nothing(home, toys_file, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_artifact, "save_file", disk_full)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "1"])
    assert result.exit_code != 0
    assert Registry.open(home).get("toys") is None
    assert sorted(p.name for p in (home / "domains").iterdir()) == ["books", "movies", "music"]
    assert not list((home / "generations").glob(".*")), "the failed write left its staging folder behind"


def test_writers_are_serialised_by_the_lock(home):
    with registry_lock(home):
        with pytest.raises(RegistryError, match="locked by another"):
            delete_bundle(home, "music", lock_timeout=0.3)
        assert (home / "domains" / "music").is_dir()
    delete_bundle(home, "music", lock_timeout=0.3)
    assert not (home / "domains" / "music").exists()


def test_add_refuses_bad_names_duplicates_and_missing_rows(home, toys_file, tmp_path):
    result = runner.invoke(app, ["domain", "add", "../evil", "--data", str(toys_file), "--home", str(home)])
    assert result.exit_code == 1 and "expected a domain name matching" in result.output
    result = runner.invoke(app, ["domain", "add", "books", "--data", str(toys_file), "--home", str(home)])
    assert result.exit_code == 1 and "--replace" in result.output
    mixed = tmp_path / "mixed.jsonl"
    write_samples(mixed, toy_samples(20, domains=("books", "movies")))
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(mixed), "--home", str(home)])
    assert result.exit_code == 1 and "no rows of domain 'toys'" in result.output
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(tmp_path / "none")])
    assert result.exit_code == 1 and "unictr train" in result.output


# None: neither side names a precision, so the CLI's and the API's defaults must agree; bf16 is forced (emulated
# on CPUs without AVX512-BF16/AMX) so that every machine checks the bf16 path is the same one too
@pytest.mark.parametrize("precision", [None, "bf16"])
def test_cli_and_api_train_the_same_dsn(home, toys_file, tmp_path, precision):
    from safetensors.torch import load_file

    from unictr_core.store.artifact import load_core
    from unictr_core.store.layout import CORE_DIR
    from unictr_core.fit.domain_training import domain_splits

    api_home = tmp_path / "api-home"
    shutil.copytree(home, api_home, symlinks=True)
    result = runner.invoke(app, ["domain", "add", "toys", "--data", str(toys_file), "--home", str(home),
                                 "--epochs", "3", "--seed", "1", "--lr", "0.03", "--no-stats"]
                           + (["--precision", precision] if precision else []))
    assert result.exit_code == 0, result.output
    cli_weights = load_file(str(home / "domains" / "toys" / "dsn.safetensors"))

    model = load_core(api_home / CORE_DIR)
    train, valid, test, _ = domain_splits(toys_file, "toys", 1)
    config = TrainConfig(epochs=3, patience=5, head_lr=(0.03 / 100, 0.03), seed=1,  # improves on epoch 0
                         **({"precision": precision} if precision else {}))
    api = train_domain(model, "toys", train, valid, test, config=config,
                       options=DomainAddOptions(progress=False, stats=False))
    stored = yaml.safe_load((home / "domains" / "toys" / "domain.yaml").read_text())["training"]["precision"]
    assert stored == (precision or DEFAULT_PRECISION)
    assert api.best_epoch > 0 and f"best epoch {api.best_epoch} of 3" in result.output
    api_weights = model.dsns["toys"].state_dict()
    assert cli_weights.keys() == api_weights.keys()
    for key, value in cli_weights.items():
        assert torch.equal(value, api_weights[key]), key


def test_train_waits_for_the_registry_lock_and_writes_nothing_when_it_cannot_get_it(home, tiny_bert, tmp_path,
                                                                                   monkeypatch):
    from unictr_core.store import snapshots as home_store

    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    monkeypatch.setattr(home_store, "LOCK_TIMEOUT_S", 0.3)
    before = digests(home)
    digests_before_core = digests(home / "core")
    train = ["train", "--data", str(data), "--home", str(home), "--backbone", tiny_bert, "--epochs", "1",
             "--max-steps", "1", "--tower", "16,8", "--max-length", "64", "--replace"]
    with registry_lock(home):  # e.g. a `domain add` committing its bundle
        result = runner.invoke(app, train)
    assert result.exit_code == 1 and "locked by another writer" in result.output
    lock = ".lock"  # holds the holder's pid
    assert {k: v for k, v in digests(home).items() if k != lock} == {k: v for k, v in before.items() if k != lock}
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    assert digests(home / "core")["core.safetensors"] != digests_before_core["core.safetensors"]


# --------------------------------------------------------------------------- issue 21: a domain worth adding
def _with_labels(samples, labels):
    import dataclasses

    return [dataclasses.replace(s, label=int(y)) for s, y in zip(samples, labels)]


def test_count_statistics_are_causal_and_the_tables_match_the_training_part():
    from unictr_core.modeling.stats import CountTables, causal_counts, count_features
    from unictr_core.modeling.ids import id_tensor, id_slots

    samples = toy_samples(60, seed=4, domains=("toys",))
    for i, s in enumerate(samples):   # few users and items, so that counts repeat; two rows per instant
        s.user_id, s.item_id, s.timestamp = f"u{i % 5}", f"i{i % 7}", i // 2
    counts = causal_counts(samples, 16384)
    assert counts[0].sum() == 0 and counts[-1, 5] == len(samples) - 2   # the last instant sees all but itself
    for cut in (0, 11, 30, 59):
        flipped = _with_labels(samples, [s.label if i < cut else 1 - s.label for i, s in enumerate(samples)])
        again = causal_counts(flipped, 16384)
        # rows at or before the cut (and its instant partner) see no label of the cut or later
        same = [i for i, s in enumerate(samples) if s.timestamp <= samples[cut].timestamp]
        np.testing.assert_array_equal(again[same], counts[same])
    tables = CountTables(16384)
    tables.fit(samples)
    probe = [s for s in toy_samples(3, seed=9, domains=("toys",))]
    probe[0].user_id, probe[0].item_id, probe[0].timestamp = "u1", "i3", 10**6   # after every training row
    probe[1].user_id, probe[1].item_id = "nobody", "nothing"
    ids = id_tensor([id_slots(s, 16384) for s in probe])
    looked_up = tables.lookup(ids)
    np.testing.assert_array_equal(looked_up[0].numpy(), causal_counts(samples + probe[:1], 16384)[-1])
    assert looked_up[1, :4].sum() == 0    # an unseen user and item: no counts, only the base rate
    assert torch.isfinite(count_features(looked_up)).all()


def test_platt_calibration_lowers_the_logloss_of_an_over_confident_dsn():
    from unictr_core import metrics
    from unictr_core.fit.calibration import fit_calibration

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0.3, 1.0, 400)
    labels = (rng.random(400) < 1 / (1 + np.exp(-true_logit))).astype(int)
    over_confident = 5.0 * true_logit          # right ranking, probabilities far too sure
    calibration = fit_calibration(over_confident, labels)
    assert 0.1 < calibration.scale < 0.4 and calibration.rows == 400
    assert calibration.logloss_after < calibration.logloss_before - 0.2
    probs = 1 / (1 + np.exp(-calibration.apply(over_confident)))
    assert metrics.auc(labels, probs) == pytest.approx(metrics.auc(labels, over_confident))
    assert metrics.ece(labels, probs) < metrics.ece(labels, 1 / (1 + np.exp(-over_confident)))
    platt = fit_calibration(over_confident, labels, fit_bias=True)   # the bias too
    assert platt.logloss_after <= calibration.logloss_after + 1e-9 and platt.bias != 0.0
    identity = fit_calibration(np.zeros(10), np.ones(10))   # one class: nothing to fit
    assert (identity.scale, identity.bias) == (1.0, 0.0)


def test_first_epoch_moves_the_dsn_and_the_statistics_survive_a_round_trip(home):
    model, _ = load_model(home)
    data = toy_samples(60, seed=11, domains=("toys",))
    config = TrainConfig(epochs=1, batch_size=16, patience=5, seed=3, head_lr=(3e-5, 3e-3))
    result = train_domain(model, "toys", data[:40], data[40:50], data[50:], config=config,
                          options=DomainAddOptions(progress=False))
    dsn = model.dsns["toys"]
    assert dsn.spec.stats and dsn.spec.calibration and float(dsn.counts.total[1]) == 40
    # the first epoch already moved the DSN's predictions away from its start (the general network)
    start, first = result.history[0], result.history[1]
    assert abs(first["valid_logloss"] - start["valid_logloss"]) > 5e-3   # 1.3e-3 with the earlier cyclic rate
    assert {"ece", "general_ece", "auc_interval", "auc_gain"} <= set(result.test)
    save_domain_bundle(model, "toys", home / "domains" / "toys", model.core_fingerprint,
                                result.metrics())
    record = read_domain_record(home / "domains" / "toys")
    assert record["dsn"] == {"residual": True, "stats": True, "calibration": True}
    assert "test_ece" in record["metrics"] and record["metrics"]["valid_rows"] == 10
    samples = toy_samples(20, seed=12, domains=("toys",))
    reloaded, notes = load_model(home)
    assert notes == []
    np.testing.assert_array_equal(predict_samples(reloaded, samples).probs, predict_samples(model, samples).probs)
    size = (home / "domains" / "toys" / "dsn.safetensors").stat().st_size
    assert size < 8 * 2**20   # bounded: the count tables are 2 x 2 x id_buckets floats whatever the data


def test_relaimpr_only_against_a_reference_clearly_above_chance():
    from unictr_core.fit.report import domain_add_table, evaluation_report, evaluation_table
    from unictr_core.modeling.predict import Predictions
    from unictr_core.data.schema import Sample

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 60)
    samples = [Sample(domain="toys", user_id="u", item_id=str(i), label=int(y)) for i, y in enumerate(labels)]
    dsn = np.clip(0.5 + 0.4 * (labels - 0.5) + rng.normal(0, 0.2, 60), 0.01, 0.99)
    general = np.clip(0.5 + 0.05 * (labels - 0.5) + rng.normal(0, 0.2, 60), 0.01, 0.99)  # AUC 0.61, not clearly
    report = evaluation_report(samples, Predictions(dsn, general, np.zeros(60, dtype=bool)))
    m = report["domains"]["toys"]
    assert m["reference_auc"] > 0.5 and m["reference_auc_interval"][0] <= 0.5
    assert m["rela_impr"] is None and "not clearly above 0.5" in m["rela_impr_note"]
    assert m["auc_gain"]["low"] < m["auc_gain"]["gain"] < m["auc_gain"]["high"] and m["ece"] is not None
    assert "gain +" in evaluation_table(report)
    test = {"rows": 60, "auc": m["auc"], "logloss": m["logloss"], "general_auc": m["general_auc"],
            "general_logloss": m["general_logloss"], "auc_interval": m["auc_interval"], "ece": m["ece"],
            "general_auc_interval": m["reference_auc_interval"], "general_ece": m["general_ece"],
            "auc_gain": m["auc_gain"]}
    text = domain_add_table("toys", test, {})
    assert "AUC gain of the DSN over zero-shot: +" in text and "no RelaImpr" in text


def test_bootstrap_auc_matches_the_plain_auc_and_covers_it():
    from unictr_core import metrics

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    probs = np.round(np.clip(0.3 * labels + rng.random(200) * 0.7, 0, 1), 2)   # with ties
    assert metrics.weighted_aucs(labels, probs, np.ones((1, 200)))[0] == pytest.approx(metrics.auc(labels, probs))
    low, high = metrics.auc_interval(labels, probs)
    assert low < metrics.auc(labels, probs) < high and high - low < 0.2
    assert metrics.ece(labels, np.full(200, labels.mean())) == pytest.approx(0.0, abs=1e-12)
