"""ID-aware Uni-CTR (`--ids dsn|all`): hashed ID embeddings, in the core or the DSN's bundle, unseen IDs neutral."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import toy_samples
from unictr_core.store.writes import save_trained
from unictr_core.config import ModelConfig, TrainConfig
from unictr_core.fit.domain_training import DomainAddOptions, train_domain
from unictr_core.fit.loop import ctr_loss
from unictr_core.modeling.ids import bucket, id_slots, id_tensor
from unictr_core.modeling.predict import tokenize_samples, predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.writes import commit_bundle
from unictr_core.data.schema import Sample
from unictr_core.fit.training import build_model, train_unictr

FAST = TrainConfig(epochs=1, batch_size=16, head_lr=(1e-4, 3e-3), backbone_lr=(1e-4, 1e-3), max_steps=4)


def config(tiny_bert, ids: str) -> ModelConfig:
    return ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64, ids=ids, id_buckets=4096, id_dim=4)


def test_slots_are_stable_hashes_of_field_and_value():
    s = Sample("books", "u1", "i9", brand="acme", extra={"genre": "Comedy", "plot": "x" * 200})
    slots = id_slots(s, 4096)
    assert slots == [bucket("user_id", "u1", 4096), bucket("item_id", "i9", 4096), bucket("brand", "acme", 4096),
                     bucket("extra:genre", "Comedy", 4096)]              # free text (> 64 chars) left out
    assert bucket("user_id", "u1", 4096) == 3022 and bucket("item_id", "u1", 4096) != 3022   # fixed, salted
    assert all(1 <= b < 4096 for b in slots)
    batch = id_tensor([slots, id_slots(Sample("books", "u2", "i1"), 4096)])
    assert batch.shape == (2, 4) and batch[1, 2:].tolist() == [0, 0]


def test_text_only_model_has_no_tables_and_the_modes_place_them(tiny_bert):
    text = build_model(config(tiny_bert, "none"), ["books"])
    assert text.id_buckets is None and tokenize_samples(text, toy_samples(3)).batch([0]).ids is None
    assert not any("id_embedding" in k for k in text.state_dict())
    dsn_only = build_model(config(tiny_bert, "dsn"), ["books"])
    assert dsn_only.general.id_embedding is None and dsn_only.dsns["books"].id_embedding is not None
    both = build_model(config(tiny_bert, "all"), ["books"])
    assert "general.id_embedding.table.weight" in both.core_state()
    with pytest.raises(ValueError, match="ids must be one of none, dsn, all"):
        ModelConfig(ids="users").validate()


def test_a_samples_id_gradient_reaches_only_its_buckets_and_its_own_dsn(tiny_bert):
    model = build_model(config(tiny_bert, "all"), ["books", "movies"])
    model.train()
    samples = [s for s in toy_samples(40) if s.domain == "books"][:6]
    batch = tokenize_samples(model, samples).batch(range(len(samples)))
    ctr_loss(model(batch.input_ids, batch.attention_mask, batch.domains, batch.ids), batch.labels).backward()
    used = set(batch.ids.flatten().tolist()) - {0}
    for table in (model.general.id_embedding.table, model.dsns["books"].id_embedding.table):
        touched = set(torch.nonzero(table.weight.grad.abs().sum(dim=1)).flatten().tolist())
        assert touched and touched <= used
    other = model.dsns["movies"].id_embedding.table.weight.grad
    assert other is None or torch.count_nonzero(other) == 0


@pytest.fixture(scope="module")
def id_home(tiny_bert, tmp_path_factory):
    result = train_unictr(toy_samples(60), toy_samples(30, seed=1), config(tiny_bert, "all"),
                          dataclasses.replace(FAST, dsn="residual"), progress=False)
    home = tmp_path_factory.mktemp("ids") / "home"
    save_trained(result.model, home)
    return home, result.model


def test_tables_live_in_the_core_and_in_each_bundle_and_unseen_ids_stay_zero(id_home):
    home, trained = id_home
    assert "general.id_embedding.table.weight" in load_file(str(home / "core" / "core.safetensors"))
    assert "id_embedding.table.weight" in load_file(str(home / "domains" / "books" / "dsn.safetensors"))
    seen = {b for s in toy_samples(60) for b in id_slots(s, 4096)}
    unseen = bucket("user_id", "never-seen-user", 4096)
    assert unseen not in seen
    table = trained.general.id_embedding.table.weight
    assert torch.count_nonzero(table[unseen]) == 0 and torch.count_nonzero(table[sorted(seen)]) > 0
    model, notes = load_model(home)
    samples = toy_samples(20, seed=5)
    np.testing.assert_allclose(predict_samples(model, samples).probs, predict_samples(trained, samples).probs,
                               rtol=1e-6)


def test_unseen_domain_with_unseen_ids_is_answered_zero_shot(id_home):
    home, _ = id_home
    model, _ = load_model(home)
    garden = [Sample("garden", f"stranger{k}", f"plant{k}", title="space robot adventure") for k in range(5)]
    predictions = predict_samples(model, garden)
    assert predictions.zero_shot.all() and np.isfinite(predictions.probs).all()


def test_domain_add_with_id_tables_leaves_every_other_domain_bit_identical(id_home, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(id_home[0], home, symlinks=True)  # the current link stays a link
    samples = toy_samples(60, seed=7)

    def per_domain():
        model, _ = load_model(home)
        return {d: predict_samples(model, [s for s in samples if s.domain == d]).probs for d in ("books", "movies")}

    before = per_domain()
    model, _ = load_model(home)
    toys = toy_samples(60, seed=3, domains=("toys",))
    result = train_domain(model, "toys", toys[:40], toys[40:50], toys[50:],
                          config=TrainConfig(epochs=2, batch_size=16, patience=5),
                          options=DomainAddOptions(progress=False))
    assert model.dsns["toys"].id_embedding is not None and result.rows["train"] == 40
    commit_bundle(home, model, "toys", result.metrics())
    assert "id_embedding.table.weight" in load_file(str(home / "domains" / "toys" / "dsn.safetensors"))
    after = per_domain()
    for domain in ("books", "movies"):
        np.testing.assert_array_equal(after[domain], before[domain])


@pytest.mark.parametrize("trained", [False, True])
def test_domain_add_keeps_the_dsns_id_table_at_zero_unless_asked(id_home, trained):
    model, _ = load_model(id_home[0])
    toys = toy_samples(60, seed=3, domains=("toys",))
    touched = []  # nonzero entries of the table after each epoch (the best epoch is restored at the end)
    options = DomainAddOptions(progress=False, ids=trained, on_epoch=lambda record: touched.append(
        int(torch.count_nonzero(model.dsns["toys"].id_embedding.table.weight))))
    result = train_domain(model, "toys", toys[:40], toys[40:50], toys[50:],
                          config=TrainConfig(epochs=2, batch_size=16, patience=5), options=options)
    assert result.ids is trained and model.dsns["toys"].id_embedding.table.weight.requires_grad is trained
    assert len(touched) == 3 and touched[0] == 0  # epoch 0 (the start), 1, 2
    assert (touched[1] > 0 and touched[2] > 0) if trained else touched == [0, 0, 0]


def test_history_slots_follow_user_and_item_padded_to_their_width():
    s = Sample("books", "u1", "i9", history=["a", "b", "c"], extra={"genre": "Comedy"})
    slots = id_slots(s, 4096, history=2)                                 # the last two history titles
    assert slots == [bucket("user_id", "u1", 4096), bucket("item_id", "i9", 4096), bucket("history", "b", 4096),
                     bucket("history", "c", 4096), bucket("extra:genre", "Comedy", 4096)]
    assert bucket("history", "b", 4096) != bucket("item_id", "b", 4096)
    short = id_slots(Sample("books", "u1", "i9", history=["a"]), 4096, history=3)
    assert short[2:] == [bucket("history", "a", 4096), 0, 0]              # padded: the bag starts at slot 5
    assert id_slots(s, 4096) == [slots[0], slots[1], slots[4]]            # history 0: the old layout


def test_history_embedding_is_the_mean_of_the_present_history_items():
    from unictr_core.modeling.ids import IdEmbedding

    embedding = IdEmbedding(16, 2, history=3)
    with torch.no_grad():
        embedding.table.weight.copy_(torch.arange(32, dtype=torch.float32).view(16, 2))
        embedding.table.weight[0].zero_()                              # the padding row, as it stays
    out = embedding(torch.tensor([[1, 2, 3, 5, 0, 7, 9], [1, 2, 0, 0, 0, 0, 0]]))
    assert embedding.out_dim == 8 and out.shape == (2, 8)
    table = embedding.table.weight
    assert torch.equal(out[0, 4:6], (table[3] + table[5]) / 2)        # two history items, the padding left out
    assert torch.equal(out[0, 6:], (table[7] + table[9]) / 2)         # the bag after the history slots
    assert torch.count_nonzero(out[1, 4:]) == 0                        # no history, no bag: zeros
    assert IdEmbedding(16, 2).out_dim == 6


def test_a_core_with_id_history_trains_saves_and_predicts_the_same_after_loading(tiny_bert, tmp_path):
    cfg = dataclasses.replace(config(tiny_bert, "all"), id_history=3)
    samples = [dataclasses.replace(s, history=[f"title {k % 7}", f"title {k % 5}"]) for k, s in
               enumerate(toy_samples(60))]
    result = train_unictr(samples, samples[:20], cfg, FAST, progress=False)
    model = result.model
    assert model.general.id_embedding.out_dim == 16
    assert tokenize_samples(model, samples[:2]).batch([0, 1]).ids.shape[1] >= 5
    history_bucket = bucket("history", "title 3", 4096)
    assert torch.count_nonzero(model.general.id_embedding.table.weight[history_bucket]) > 0   # history trained
    save_trained(model, tmp_path / "home")
    loaded, _ = load_model(tmp_path / "home")
    assert loaded.config.id_history == 3
    np.testing.assert_allclose(predict_samples(loaded, samples[:20]).probs,
                               predict_samples(model, samples[:20]).probs, rtol=1e-6)
    with pytest.raises(ValueError, match="id_history must be 0"):
        ModelConfig(id_history=-1).validate()
    with pytest.raises(ValueError, match="it needs ids dsn or all, got ids none"):
        ModelConfig(id_history=3).validate()


def test_field_slots_hold_one_value_per_named_field_in_order_and_no_bag():
    s = Sample("books", "u1", "i9", brand="acme", history=["a", "b"],
               extra={"genre": "Comedy", "age": "21", "blurb": "x" * 100})
    slots = id_slots(s, 4096, history=1, fields=["age", "gender", "brand", "genre", "blurb"])
    assert slots == [bucket("user_id", "u1", 4096), bucket("item_id", "i9", 4096), bucket("history", "b", 4096),
                     bucket("extra:age", "21", 4096), 0, bucket("brand", "acme", 4096),
                     bucket("extra:genre", "Comedy", 4096), 0]      # absent gender and free-text blurb: no value
    bag = id_slots(s, 4096, history=1)                               # the same values as the bag hashes them
    assert sorted(bag[3:]) == sorted(v for v in slots[3:] if v)


def test_field_embedding_concatenates_each_fields_vector_after_the_history_mean():
    from unictr_core.modeling.ids import IdEmbedding

    embedding = IdEmbedding(16, 2, history=2, fields=3)
    with torch.no_grad():
        embedding.table.weight.copy_(torch.arange(32, dtype=torch.float32).view(16, 2))
        embedding.table.weight[0].zero_()
    out = embedding(torch.tensor([[1, 2, 3, 0, 7, 0, 9]]))
    table = embedding.table.weight
    assert embedding.out_dim == 12 and out.shape == (1, 12)
    assert torch.equal(out[0, 4:6], table[3])                          # the history mean: one present item
    assert torch.equal(out[0, 6:], torch.cat([table[7], table[0], table[9]]))   # one slot per field, not averaged
    assert IdEmbedding(16, 2, fields=4).out_dim == 12


def test_auto_id_fields_are_detected_on_the_training_split_and_stored_by_name(tiny_bert, tmp_path):
    from unictr_core.modeling.ids import detected_id_fields

    samples = [dataclasses.replace(s, extra={"age": str(20 + k % 3), "tagline": "same", "note": f"n{k}" * 40,
                                              "gender": ["f", "m"][k % 2]}) for k, s in enumerate(toy_samples(60))]
    assert detected_id_fields(samples) == ["brand", "age", "gender"]   # one value or free text: not categorical
    cfg = dataclasses.replace(config(tiny_bert, "dsn"), id_fields=["auto"])
    result = train_unictr(samples, samples[:20], cfg, FAST, progress=False)
    model = result.model
    assert model.config.id_fields == ["brand", "age", "gender"]
    dsn = model.dsns["books"].id_embedding
    assert dsn.out_dim == 5 * 4 and tokenize_samples(model, samples[:2]).batch([0, 1]).ids.shape[1] == 5
    assert torch.count_nonzero(dsn.table.weight[bucket("extra:gender", "m", 4096)]) > 0     # each field trained
    save_trained(model, tmp_path / "home")
    loaded, _ = load_model(tmp_path / "home")
    assert loaded.config.id_fields == ["brand", "age", "gender"]
    np.testing.assert_allclose(predict_samples(loaded, samples[:20]).probs,
                               predict_samples(model, samples[:20]).probs, rtol=1e-6)


@pytest.mark.parametrize("fields, ids, message", [
    (["age"], "none", "they need ids dsn or all, got ids none"),
    (["auto", "age"], "dsn", "'auto' stands alone"),
    (["age", "age"], "dsn", "a field is named twice"),
    (["user_id"], "dsn", "'user_id' is not a categorical field name"),
    ([" age"], "dsn", "' age' is not a categorical field name"),
    ([f"f{k}" for k in range(33)], "dsn", "at most 32 fields"),
])
def test_bad_id_fields_are_refused_with_the_reason(fields, ids, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(ids=ids, id_fields=fields).validate()


def test_train_cli_passes_id_fields_and_refuses_them_without_ids(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unictr_cli.main import app
    from unictr_core import workflows

    runner = CliRunner()
    plans = []
    monkeypatch.setattr(workflows, "train_home", lambda plan, group, on_epoch=None: plans.append(plan))
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    home = str(tmp_path / "h")
    result = runner.invoke(app, ["train", "--data", str(data), "--home", home, "--ids", "dsn", "--id-fields",
                                 "brand, age"])
    assert result.exit_code == 0, result.output
    assert plans[0].model_config.id_fields == ["brand", "age"]
    bad = runner.invoke(app, ["train", "--data", str(data), "--home", home, "--id-fields", "auto"])
    assert bad.exit_code != 0 and "they need ids dsn or all, got ids none" in bad.output


def _group_of(optimizer, parameter) -> dict:
    (group,) = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return group


@pytest.mark.parametrize("schedule", ["cyclic", "cosine"])
def test_id_tables_learn_at_id_lr_scale_times_the_heads_rate_in_joint_training(tiny_bert, schedule):
    from unictr_core.fit.training import make_optimizer

    model = build_model(config(tiny_bert, "all"), ["books", "movies"])
    tables = [model.general.id_embedding.table.weight] + [model.dsns[d].id_embedding.table.weight
                                                          for d in ("books", "movies")]
    tower = next(model.general.tower.parameters())
    one_rate = TrainConfig(head_lr=(1e-5, 2e-3), lr_schedule=schedule)
    optimizer, _ = make_optimizer(model, one_rate, steps_per_epoch=10)
    assert all(_group_of(optimizer, t) is _group_of(optimizer, tower) for t in tables)   # 1.0: one group
    scaled = dataclasses.replace(one_rate, id_lr_scale=5.0)
    optimizer, scheduler = make_optimizer(model, scaled, steps_per_epoch=10)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    ids, heads = _group_of(optimizer, tables[0]), _group_of(optimizer, tower)
    assert all(_group_of(optimizer, t) is ids for t in tables) and ids is not heads
    for _ in range(3):                   # the ratio holds along the schedule, not only at its start
        optimizer.step()
        scheduler.step()
        assert ids["lr"] == pytest.approx(5.0 * heads["lr"])


def test_domain_add_dsn_optimizer_scales_only_the_id_table(tiny_bert):
    from unictr_core.fit.domain_training import dsn_optimizer

    model = build_model(config(tiny_bert, "dsn"), ["books"])
    dsn = model.new_dsn()
    optimizer, _ = dsn_optimizer(dsn, TrainConfig(head_lr=(1e-5, 3e-3), id_lr_scale=4.0), steps_per_epoch=5)
    assert _group_of(optimizer, dsn.id_embedding.table.weight)["lr"] == pytest.approx(1.2e-2)
    assert _group_of(optimizer, next(dsn.tower.parameters()))["lr"] == pytest.approx(3e-3)


@pytest.mark.parametrize("scale", [0.0, -1.0, 101.0, float("nan")])
def test_a_bad_id_lr_scale_is_refused(scale):
    with pytest.raises(ValueError, match=r"id_lr_scale must be in \(0, 100\]"):
        TrainConfig(id_lr_scale=scale).validate()


def test_train_cli_passes_id_lr_scale(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unictr_cli.main import app
    from unictr_core import workflows

    plans = []
    monkeypatch.setattr(workflows, "train_home", lambda plan, group, on_epoch=None: plans.append(plan))
    data = tmp_path / "data"
    runner = CliRunner()
    assert runner.invoke(app, ["data", "generate", "--out", str(data), "--scale", "0.1"]).exit_code == 0
    home = str(tmp_path / "h")
    result = runner.invoke(app, ["train", "--data", str(data), "--home", home, "--ids", "all", "--id-lr-scale", "5"])
    assert result.exit_code == 0, result.output
    assert plans[0].train_config.id_lr_scale == 5.0
    bad = runner.invoke(app, ["train", "--data", str(data), "--home", home, "--ids", "all", "--id-lr-scale", "0"])
    assert bad.exit_code != 0 and "id_lr_scale must be in (0, 100]" in bad.output
    no_ids = runner.invoke(app, ["train", "--data", str(data), "--home", home, "--id-lr-scale", "5"])
    assert no_ids.exit_code != 0 and "it needs ids dsn or all, got ids none" in no_ids.output
    assert len(plans) == 1
