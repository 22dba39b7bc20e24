"""Prompt templates: generic extra fields, field usage, dataset templates through train / prompts / domain add."""

from __future__ import annotations

import random

import pytest
import yaml
from typer.testing import CliRunner

from unictr_core.data.dataset import load_dataset, write_dataset
from unictr_core.data.prompts import PromptTemplate, TemplateSet, field_usage, readable_name
from unictr_core.store.loading import load_model
from unictr_core.store.registry import templates_for
from unictr_core.data.schema import DataError, Sample

try:
    from unictr_cli.main import app
except ImportError:  # pragma: no cover - before `pip install -e .`
    from cli.main import app


def _sample(**extra) -> Sample:
    return Sample(domain="podcasts", user_id="u1", item_id="i9", label=1, timestamp=3, title="Deep Talk",
                  history=["Old Show"], extra=extra)


def test_default_template_renders_extra_fields_generically():
    s = _sample(host_name="Ann Lee", episodeCount="12", empty=" ")
    text = PromptTemplate().render(s)
    assert text == ("Podcasts: The user ID is u1, who clicked 'Old Show' recently. The ID of the current item is i9, "
                    "the title is 'Deep Talk', the episode count is 12, the host name is Ann Lee.")
    assert readable_name("age_band") == "age band" and readable_name("releaseYear") == "release year"
    # a template naming a field does not repeat it in {extras}
    named = PromptTemplate(parts=["{domain_name}:", " host {host_name}", "{extras}", "."])
    assert named.render(s) == "Podcasts: host Ann Lee, the episode count is 12."
    # a template without {extras} renders only what it names
    assert PromptTemplate(parts=["{title}"]).render(s) == "Deep Talk"
    long = PromptTemplate().render(_sample(notes="x" * 500))
    assert "x" * 79 + "…" in long and "x" * 81 not in long


def test_field_usage_lists_used_and_ignored_fields():
    samples = [_sample(host_name="Ann"), Sample(domain="books", user_id="u2", item_id="b1", label=0, brand="Acme")]
    own = PromptTemplate(parts=["{domain_name}: {user_id} likes {item_id}", " by {brand}"])
    usage = field_usage(TemplateSet({"books": own}), samples)
    assert usage == [(["books"], ["domain", "user_id", "item_id", "brand"], []),
                     (["podcasts"], ["domain", "user_id", "item_id", "history", "title", "host_name"],
                      ["timestamp"])]


def _dataset(tmp_path, template=None):
    rng = random.Random(0)
    rows = [Sample(domain=rng.choice(["books", "podcasts", "quizzes"]), user_id=f"u{i % 7}", item_id=f"i{i}",
                   label=i % 2, timestamp=i, title=rng.choice(["star galaxy", "food guide", "running story"]),
                   extra={"mood": rng.choice(["calm", "loud"])}) for i in range(45)]
    meta = {"name": "toy", "holdout_domains": ["quizzes"]}
    if template is not None:
        meta["template"] = template
    write_dataset(tmp_path / "ds", rows[:27], rows[27:36], rows[36:], meta)
    return tmp_path / "ds"


OWN = {"parts": ["{domain_name}:", " user {user_id} saw {item_id}", " '{title}'", " in a {mood} mood", "."],
       "history_item": "'{text}'"}


def test_dataset_template_is_the_default_and_registry_templates_win(tmp_path):
    ds = load_dataset(_dataset(tmp_path, OWN))
    templates = templates_for(ds.domains, default=ds.template)
    podcast = next(s for s in ds.train if s.domain == "podcasts")
    assert templates.render(podcast) == f"Podcasts: user {podcast.user_id} saw {podcast.item_id} '{podcast.title}' " \
                                        f"in a {podcast.extra['mood']} mood."
    book = next(s for s in ds.train if s.domain == "books")
    assert templates.render(book).startswith("Books: The user ID is")  # the shipped definition of books


def test_broken_dataset_template_names_file_and_field(tmp_path):
    folder = _dataset(tmp_path, {"parts": ["{oops"]})
    with pytest.raises(DataError, match=r"dataset.yaml.*field 'template'.*not a valid format string"):
        load_dataset(folder)


def test_train_prompts_and_domain_add_render_the_dataset_template(tmp_path, tiny_bert):
    folder = _dataset(tmp_path, OWN)
    home = tmp_path / "home"
    runner = CliRunner()
    base = ["--data", str(folder), "--home", str(home)]
    before = runner.invoke(app, ["prompts", *base, "--backbone", tiny_bert, "--limit", "2"])
    assert before.exit_code == 0, before.output
    assert "dataset.yaml's template" in before.output and " mood." in before.output
    trained = runner.invoke(app, ["train", *base, "--backbone", tiny_bert, "--epochs", "1", "--max-steps", "1",
                                  "--tower", "8", "--max-length", "48"])
    assert trained.exit_code == 0, trained.output
    assert "prompt fields (podcasts): uses domain, user_id, item_id, title, mood; ignores timestamp" \
        in trained.output, trained.output
    assert "prompt fields (books): uses domain, user_id, item_id, title; ignores timestamp, mood" in trained.output
    after = runner.invoke(app, ["prompts", *base, "--domain", "quizzes", "--split", "test", "--limit", "1"])
    assert after.exit_code == 0, after.output
    assert "the trained core" in after.output and "p50" in after.output and "p95" in after.output
    ds = load_dataset(folder)
    quiz = next(s for s in ds.test if s.domain == "quizzes")
    assert f"\n{ds.template.render(quiz)}\n" in after.output  # the zero-shot domain reads the dataset's template
    model, _ = load_model(home)
    for s in ds.test:  # prediction renders what training rendered
        assert model.templates.render(s) == templates_for(ds.domains, default=ds.template).render(s)
    added = runner.invoke(app, ["domain", "add", "quizzes", *base, "--epochs", "1", "--no-cache"])
    assert added.exit_code == 0, added.output
    assert "prompt fields (quizzes): uses domain, user_id, item_id, title, mood" in added.output
    record = yaml.safe_load((home / "domains" / "quizzes" / "domain.yaml").read_text())
    assert record["template"]["parts"] == OWN["parts"]
