"""Like for like: every field the ID baselines use for a row is in that row's prompt.

For each adapter, a small dataset is built from the real files in ../shared/data;
the baselines' feature builder (fitted on its training split) decides which
fields count, and every row's prompt -- rendered with the templates training,
evaluation and prediction use (the domain registry's, else the dataset's own)
-- must contain each of those values, and the history texts the baselines see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unictr_core.adapters.amazon2018 import prepare_amazon2018
from unictr_core.adapters.movielens import prepare_movielens
from unictr_core.baselines.features import FeatureEncoder
from unictr_core.data.dataset import load_dataset
from unictr_core.data.prompts import display_name_of
from unictr_core.store.registry import templates_for

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _missing_fields(ds) -> tuple[list[str], list[tuple]]:
    """(the baselines' fields, [(domain, field, value, prompt)] for every value not in its row's prompt)."""
    encoder = FeatureEncoder().fit(ds.train)
    templates = templates_for(ds.domains, default=ds.template)  # as `unictr train` / benchmark do
    missing = []
    for s in [*ds.train, *ds.valid, *ds.test]:
        text = templates.render(s)
        for name in encoder.field_names:
            if name == "domain":
                value, found = s.domain, display_name_of(s.domain) in text or s.domain in text
            elif name == "price":  # the baselines see a bucket of the price; the prompt the price itself
                value = s.price
                found = value is None or value in text
            else:
                value = encoder._raw_value(s, name)
                found = value is None or value in text
            if not found:
                missing.append((s.domain, name, value, text))
        for item in s.history[-encoder.max_history:]:
            if item not in text:
                missing.append((s.domain, "history", item, text))
    return encoder.field_names, missing


def test_movielens_prompts_hold_every_baseline_field(tmp_path):
    raw = DATA / "ml-100k"
    if not raw.is_dir():
        pytest.fail(f"real data missing: {raw}")
    prepare_movielens(raw, tmp_path / "ml", max_rows=400, min_domain_rows=40)
    ds = load_dataset(tmp_path / "ml")
    fields, missing = _missing_fields(ds)
    for name in ("age", "age_band", "gender", "occupation", "genres", "year"):
        assert f"extra:{name}" in fields  # the check below is not vacuous
    assert not missing, missing[:5]


def test_amazon2018_prompts_hold_every_baseline_field(tmp_path):
    raw = DATA / "amazon2018"
    if not raw.is_dir():
        pytest.fail(f"real data missing: {raw}")
    prepare_amazon2018(raw, tmp_path / "az", max_rows=400)
    ds = load_dataset(tmp_path / "az")
    fields, missing = _missing_fields(ds)
    for name in ("extra:price_bin", "brand", "price"):  # (style values run past the baselines' length limit)
        assert name in fields
    assert any(s.extra.get("category_path") for s in ds.train)
    assert not missing, missing[:5]


def test_the_check_catches_a_template_that_drops_a_field(tmp_path):
    prepare_movielens(DATA / "ml-100k", tmp_path / "ml", max_rows=200, min_domain_rows=40)
    ds = load_dataset(tmp_path / "ml")
    ds.meta["template"]["parts"] = [p for p in ds.meta["template"]["parts"] if "{year}" not in p]
    _, missing = _missing_fields(ds)
    assert {name for _, name, _, _ in missing} == {"extra:year"}
