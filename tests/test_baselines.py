"""The eight baselines: they learn, are seeded, fit features on train only and keep domains apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unictr_plugins.baselines as builtin_baselines
from unictr_core.baselines import BaselineSettings, FeatureEncoder, baselines, fit_baseline
from unictr_core.baselines.multi_domain import PLE, STAR, MMoE, PartitionedNorm, SharedBottom
from unictr_core.data.dataset import split_by_time
from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import get_plugin_manager
from unictr_core.data.schema import DataError, Sample
from unictr_core.data.synthetic import HOLDOUT_DOMAINS, generate

EIGHT = ["deepfm", "dcn", "autoint", "xdeepfm", "shared_bottom", "mmoe", "ple", "star"]
SETTINGS = BaselineSettings(epochs=8, lr=0.01, batch_size=128, embed_dim=8, hidden=(32, 16), patience=2, seed=3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_samples(n_per_domain: int, seed: int, domains=("books", "music", "toys")) -> list[Sample]:
    """Clicks driven by a fixed hidden user/item quality plus a per-domain shift."""
    truth = np.random.default_rng(1234)
    user_q, item_q = truth.normal(size=50), truth.normal(size=70)
    rng = np.random.default_rng(seed)
    out = []
    for d_index, domain in enumerate(domains):
        for k in range(n_per_domain):
            u, i = int(rng.integers(50)), int(rng.integers(70))
            p = 1 / (1 + np.exp(-(2 * user_q[u] + 2 * item_q[i] + 0.5 * (d_index - 1))))
            out.append(Sample(domain, f"u{u}", f"i{i}", int(rng.random() < p), 1000 * seed + k, f"title {i}",
                              f"brand{i % 6}", f"{5 + i % 11}.99", [f"title {j}" for j in rng.integers(70, size=2)],
                              {"genres": f"g{i % 4}|other", "age": str(u % 5)}))
    return out


@pytest.fixture(scope="module")
def data():
    return make_samples(500, 1), make_samples(150, 2), make_samples(200, 3)


@pytest.mark.parametrize("name", sorted(builtin_baselines.BUILTIN))
def test_every_baseline_learns(name, data):
    train, valid, test = data
    info = baselines()[name]
    fitted = fit_baseline(name, info.factory, train, valid, SETTINGS)
    scores = fitted.evaluate(test)
    assert set(scores) == {"books", "music", "toys"}
    aucs = [s.auc for s in scores.values()]
    assert min(aucs) >= 0.6, (name, aucs)
    assert all(s.logloss is not None and np.isfinite(s.logloss) for s in scores.values()), scores
    assert fitted.multi_domain == info.multi_domain
    assert len(fitted.models) == (1 if info.multi_domain else 3)


@pytest.fixture(scope="module")
def builtin_joint():
    """The built-in data (seed 0; scale 2 so that music has 70 test rows), joint domains only, split by time."""
    splits = split_by_time(generate(seed=0, scale=2.0), (0.8, 0.1, 0.1))
    return tuple([s for s in rows if s.domain not in HOLDOUT_DOMAINS] for rows in splits)


BUILTIN_DATA_SETTINGS = BaselineSettings(epochs=20, lr=0.01, batch_size=128, embed_dim=8, hidden=(32, 16),
                                         patience=3, seed=0)


@pytest.mark.parametrize("name", sorted(baselines()))
def test_every_registered_baseline_learns_the_builtin_data(name, builtin_joint):
    """ID features alone (user/item bias, repeat items) must lift every baseline clearly above chance."""
    assert set(builtin_baselines.BUILTIN) <= set(baselines())
    train, valid, test = builtin_joint
    fitted = fit_baseline(name, baselines()[name].factory, train, valid, BUILTIN_DATA_SETTINGS)
    scores = fitted.evaluate(test)
    assert set(scores) == {"books", "movies", "music"}
    aucs = {domain: round(score.auc, 4) for domain, score in scores.items()}
    assert np.mean(list(aucs.values())) >= 0.62, (name, aucs)
    assert min(aucs.values()) >= 0.53, (name, aucs)


def test_registry_lists_the_eight_with_categories_and_accepts_third_party():
    found = baselines()
    assert set(EIGHT) <= set(found) and "pnn" in found and not found["pnn"].multi_domain
    assert {n for n in EIGHT if found[n].multi_domain} == {"shared_bottom", "mmoe", "ple", "star"}
    assert found["deepfm"].plugin == "unictr_plugins.baselines"          # a built-in plugin (group unictr.builtin)

    class ThirdParty:
        @hookimpl
        def register_baselines(self, register):
            register("my_model", SharedBottom)

    pm = get_plugin_manager()
    plugin = ThirdParty()
    pm.register(plugin, name="third_party_test")
    try:
        assert baselines()["my_model"].plugin == "third_party_test"
    finally:
        pm.unregister(plugin)
    assert "my_model" not in baselines()


@pytest.mark.parametrize("name", ["deepfm", "star"])
def test_same_seed_same_result_other_seed_differs(name, data):
    train, valid, test = data
    factory = baselines()[name].factory
    short = BaselineSettings(**{**SETTINGS.__dict__, "epochs": 2})
    a = fit_baseline(name, factory, train, valid, short).predict(test)
    b = fit_baseline(name, factory, train, valid, short).predict(test)
    c = fit_baseline(name, factory, train, valid, BaselineSettings(**{**short.__dict__, "seed": 4})).predict(test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_encoder_fits_on_train_only_and_maps_unseen_to_oov():
    train = make_samples(30, 1)
    encoder = FeatureEncoder(max_history=3).fit(train)
    spec = encoder.spec()
    assert "extra:genres" in spec.field_names and "extra:age" in spec.field_names
    assert encoder.vocabs["extra:genres"].lookup("g1") >= 2          # first genre only
    assert "g1|other" not in encoder.vocabs["extra:genres"].index
    train_prices = [float(s.price) for s in train]
    assert min(train_prices) <= min(encoder.price_edges) and max(encoder.price_edges) <= max(train_prices)

    unseen = Sample("books", "new-user", "new-item", 1, 0, "new title", None, "999999", ["never seen", "title 3"],
                    {"genres": "g2|x", "age": "zzz"})
    enc = encoder.transform([unseen])
    row = dict(zip(spec.field_names, enc.fields[0]))
    assert row["user_id"] == 1 and row["item_id"] == 1 and row["extra:age"] == 1   # OOV
    assert row["brand"] == 0                                                        # missing
    assert row["price"] == encoder.vocabs["price"].lookup(f"bin{len(encoder.price_edges)}")  # top train bin
    assert enc.history[0, 0] == 1 and enc.history[0, 1] >= 2 and enc.history[0, 2] == 0
    before = {k: dict(v.index) for k, v in encoder.vocabs.items()}
    encoder.transform(make_samples(30, 9, domains=("garden",)))
    assert {k: dict(v.index) for k, v in encoder.vocabs.items()} == before          # transform never refits
    assert encoder.transform([Sample("garden", "u1", "i1", 0)]).domain[0] == -1


def test_partitioned_norm_never_mixes_domain_statistics():
    torch.manual_seed(0)
    norm = PartitionedNorm(4, num_domains=2).train()
    x_a = torch.randn(8, 4)
    out_1 = norm.normalise(x_a, 0)
    stats_0 = (norm.running_mean[0].clone(), norm.running_var[0].clone())
    stats_1 = (norm.running_mean[1].clone(), norm.running_var[1].clone())
    norm.normalise(torch.randn(8, 4) * 100 + 50, 1)                  # a wildly different domain-1 batch
    assert torch.equal(norm.running_mean[0], stats_0[0]) and torch.equal(norm.running_var[0], stats_0[1])
    assert not torch.equal(norm.running_mean[1], stats_1[0])
    torch.testing.assert_close(norm.normalise(x_a, 0), out_1)        # domain-0 output ignores domain-1 rows
    norm.eval()
    assert not torch.allclose(norm.normalise(x_a, 0), norm.normalise(x_a, 1))   # each domain's own running stats


@pytest.mark.parametrize("cls", [SharedBottom, MMoE, PLE, STAR])
def test_a_sample_trains_only_its_own_domain_head(cls, data):
    train = data[0]
    encoder = FeatureEncoder().fit(train)
    spec = encoder.spec()
    torch.manual_seed(0)
    kwargs = {"levels": 1} if cls is PLE else {}
    model = cls(spec, embed_dim=4, hidden=(8,), dropout=0.0, **kwargs).train()
    enc = encoder.transform([s for s in train if s.domain == "books"][:16])
    logits = model(torch.from_numpy(enc.fields), torch.from_numpy(enc.history), torch.from_numpy(enc.domain))
    logits.sum().backward()
    other = spec.domains.index("music")
    own = spec.domains.index("books")
    if cls is STAR:
        assert model.star[0].domain_weight.grad[other].abs().sum() == 0
        assert model.star[0].domain_weight.grad[own].abs().sum() > 0
        assert model.norm.domain_gamma.grad[other].abs().sum() == 0
    else:
        tower_grads = [p.grad for p in model.towers[other].parameters()]
        assert all(g is None or g.abs().sum() == 0 for g in tower_grads)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.towers[own].parameters())


def test_zero_shot_needs_an_explicit_head(data):
    train, valid, _ = data
    held_out = make_samples(60, 7, domains=("garden",))
    for name in ("dcn", "mmoe"):
        fitted = fit_baseline(name, baselines()[name].factory, train, valid,
                              BaselineSettings(**{**SETTINGS.__dict__, "epochs": 1}))
        with pytest.raises(ValueError, match="garden"):
            fitted.predict(held_out)
        with pytest.raises(ValueError, match="no head for domain 'nope'"):
            fitted.predict(held_out, head_domain="nope")
        by_head = {d: fitted.predict(held_out, head_domain=d) for d in fitted.domains}
        assert all(p.shape == (60,) and np.all((p > 0) & (p < 1)) for p in by_head.values())
        assert not np.allclose(by_head["books"], by_head["music"])


def test_bad_label_is_reported_with_split_line_and_field(data):
    train, valid, _ = data
    broken = list(train)
    broken[4] = Sample("books", "u1", "i1", None)
    with pytest.raises(DataError) as err:
        fit_baseline("dcn", baselines()["dcn"].factory, broken, valid, SETTINGS)
    assert err.value.line == 5 and err.value.field == "label" and "train" in str(err.value)


def test_unseen_values_embed_to_zero_and_single_domain_models_skip_the_domain_field(data):
    from unictr_core.baselines.single_domain import DeepFM

    train = data[0]
    encoder = FeatureEncoder().fit(train)
    spec = encoder.spec()
    torch.manual_seed(0)
    single, multi = DeepFM(spec, embed_dim=4), SharedBottom(spec, embed_dim=4)
    assert single.embedding.num_slots == spec.num_fields and multi.embedding.num_slots == spec.num_fields + 1
    enc = encoder.transform([Sample("garden", "new-user", "i1", 1, 0, None, None, None, ["never seen"], {})])
    emb = multi.embedding(torch.from_numpy(enc.fields), torch.from_numpy(enc.history))[0]
    user, item, domain = (spec.field_names.index(n) for n in ("user_id", "item_id", "domain"))
    assert torch.count_nonzero(emb[user]) == 0 and torch.count_nonzero(emb[domain]) == 0   # OOV -> zeros
    assert torch.count_nonzero(emb[item]) > 0                                              # seen value
    assert torch.count_nonzero(emb[-1]) == 0                                               # unseen history
