"""The floors: user's and item's historical positive rate, fitted on train only, smoothed toward the global rate."""

from __future__ import annotations

import numpy as np
import pytest

from unictr_core.baselines import baselines, fit_baseline
from unictr_core.baselines.floors import FLOOR, floor_scores
from unictr_core.data.schema import Sample


def rows(spec: list[tuple[str, str, int]], domain: str = "books") -> list[Sample]:
    return [Sample(domain, u, i, label, k) for k, (u, i, label) in enumerate(spec)]


TRAIN = rows([("a", "x", 1), ("a", "y", 1), ("a", "x", 1), ("b", "x", 0), ("b", "y", 0), ("c", "y", 1)])


def test_floors_are_registered_through_the_baseline_hook_as_their_own_category():
    registered = baselines()
    assert registered["user_rate"].category == FLOOR and registered["item_rate"].category == FLOOR
    assert registered["user_rate"].plugin == registered["deepfm"].plugin


@pytest.mark.parametrize("name", ["user_rate", "item_rate"])
def test_rate_is_the_smoothed_training_rate_and_unseen_values_get_the_global_rate(name):
    fitted = fit_baseline(name, baselines()[name].factory, TRAIN, TRAIN)
    model = fitted.models["*"]
    assert fitted.epochs_run == {"*": 0} and sum(p.numel() for p in model.parameters()) == 0
    m, g = model.smoothing, 4 / 6
    probs = fitted.predict(rows([("a", "x", 1), ("b", "y", 0), ("new", "new", 0)]))
    if name == "user_rate":
        expected = [(3 + m * g) / (3 + m), (0 + m * g) / (2 + m), g]
    else:
        expected = [(2 + m * g) / (3 + m), (2 + m * g) / (3 + m), g]
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_rates_come_from_the_training_rows_only():
    """Validation labels must not move the rates: the same train with opposite valid labels, same predictions."""
    valid = rows([("a", "x", 0), ("b", "y", 1)])
    flipped = rows([("a", "x", 1), ("b", "y", 0)])
    factory = baselines()["user_rate"].factory
    a = fit_baseline("user_rate", factory, TRAIN, valid).predict(valid)
    b = fit_baseline("user_rate", factory, TRAIN, flipped).predict(valid)
    np.testing.assert_array_equal(a, b)


def test_floor_scores_rank_users_by_their_rate():
    rng = np.random.default_rng(0)
    quality = {f"u{k}": rng.normal() * 2 for k in range(30)}

    def draw(n, start):
        out = []
        for k in range(n):
            u = f"u{rng.integers(30)}"
            out.append(Sample("toys", u, f"i{rng.integers(40)}", int(rng.random() < 1 / (1 + np.exp(-quality[u]))),
                              start + k))
        return out

    scores = floor_scores(draw(600, 0), draw(100, 1000), draw(300, 2000))
    assert set(scores) == {"user_rate", "item_rate"}
    assert scores["user_rate"]["auc"] > 0.7            # users carry the signal here
    assert abs(scores["item_rate"]["auc"] - 0.5) < 0.1  # items carry none
