"""The domain registry: which registration serves a domain, compatibility, validation, listing, removal rules."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import build_home, toy_samples
from unictr_cli.main import app
from unictr_core import plugins
from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import DomainSpec
from unictr_core.modeling.predict import predict_samples
from unictr_core.store.loading import load_model
from unictr_core.store.registry import Registry, RegistryError
from unictr_core.store.writes import delete_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def homes(tiny_bert, tmp_path_factory) -> tuple[Path, Path]:
    """Two homes whose cores differ (the second was trained on other data)."""
    base = tmp_path_factory.mktemp("homes")
    first = build_home(tiny_bert, base / "first")
    second = base / "second"
    shutil.copytree(first, second, symlinks=True)
    other = build_home(tiny_bert, base / "other-core", seed=1)
    core = Path(os.path.realpath(second / "core"))  # the current snapshot's core folder
    shutil.rmtree(core)
    shutil.copytree(other / "core", core)
    assert Registry(first).core_fingerprint != Registry(second).core_fingerprint
    return first, second


@pytest.fixture
def home(homes, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(homes[0], copy, symlinks=True)
    return copy


class PackagePlugin:
    """Like an installed package: a bundle of its own outside the home, plus an invalid registration."""

    def __init__(self, bundles: dict[str, Path]):
        self.bundles = bundles

    @hookimpl
    def register_domains(self, register):
        for name, bundle in self.bundles.items():
            register(DomainSpec(name=name, bundle=bundle, description=f"{name} from a package"))
        register(DomainSpec(name="../escape", description="must be refused"))


@pytest.fixture
def package_plugin(monkeypatch):
    registered = []

    def install(bundles: dict[str, Path], dist: str = "unictr-domains-demo"):
        plugin = PackagePlugin(bundles)
        plugins.get_plugin_manager().register(plugin, name="demo_plugin")
        monkeypatch.setitem(plugins._dist_of, "demo_plugin", dist)
        registered.append(plugin)
        return plugin

    yield install
    plugins.get_plugin_manager(reload=True)


def test_local_bundles_and_shipped_definitions_are_listed(home):
    registry = Registry.open(home)
    assert {n for n, e in registry.entries.items() if e.status == "ready"} == {"books", "movies", "music"}
    books = registry.get("books")
    assert books.local and books.source == "local" and books.compatible and books.size_bytes > 0
    assert books.others == ["shipped definition (zero-shot)"]
    gift = registry.get("gift_cards")
    assert gift.source == "shipped definition" and gift.bundle is None and gift.template.display_name == "Gift Cards"
    assert not any(name.startswith(".") for name in registry.entries)


def test_package_bundle_serves_and_local_wins_a_tie(home, package_plugin, tmp_path):
    vendor = tmp_path / "vendor" / "bundles"
    shutil.copytree(home / "domains" / "music", vendor / "music")
    shutil.copytree(home / "domains" / "books", vendor / "pets")  # folder name != bundle name -> broken
    shutil.copytree(home / "domains" / "movies", tmp_path / "vendor" / "movies")
    shutil.rmtree(home / "domains" / "movies")
    package_plugin({"music": vendor / "music", "pets": vendor / "pets", "movies": tmp_path / "vendor" / "movies"})
    registry = Registry.open(home)
    assert any("../escape" in p and "demo_plugin" in p for p in registry.problems)
    assert registry.get("music").source == "local"  # both ready: the local bundle wins
    assert registry.get("music").others == ["package unictr-domains-demo (ready)", "shipped definition (zero-shot)"]
    movies = registry.get("movies")
    assert movies.source == "package unictr-domains-demo" and movies.status == "ready" and not movies.local
    assert registry.get("pets").status == "broken" and "registered as 'pets'" in registry.get("pets").problem

    model, notes = load_model(home)
    assert sorted(model.domains) == ["books", "movies", "music"]
    assert any("pets" in n for n in notes)
    with pytest.raises(RegistryError, match="pip uninstall unictr-domains-demo"):
        delete_bundle(home, "movies")
    assert (tmp_path / "vendor" / "movies" / "dsn.safetensors").exists()  # nothing of the package deleted
    result = runner.invoke(app, ["domain", "remove", "movies", "--home", str(home), "--yes"])
    assert result.exit_code == 1 and "UNICTR_LOAD_PLUGINS" in result.output


def test_bundle_of_another_core_is_incompatible_and_predicted_zero_shot(homes, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(homes[1], home, symlinks=True)  # the bundles of the first core beside the second core
    registry = Registry.open(home)
    assert registry.get("books").status == "incompatible" and registry.get("books").compatible is False
    model, notes = load_model(home)
    assert model.domains == []
    assert len(notes) == 3 and all("predicted zero-shot" in n for n in notes)
    predictions = predict_samples(model, toy_samples(12, seed=4))
    assert predictions.zero_shot.all()
    listing = json.loads(runner.invoke(app, ["domain", "list", "--home", str(home), "--json"]).output)
    books = next(d for d in listing["domains"] if d["name"] == "books")
    assert books["compatible"] is False and books["status"] == "incompatible"
    assert listing["core_fingerprint"] == registry.core_fingerprint


def test_corrupted_bundle_is_reported_and_the_others_still_load(home):
    (home / "domains" / "music" / "domain.yaml").write_text("format_version: [unclosed\n")
    registry = Registry.open(home)
    music = registry.get("music")  # listed broken; the shipped definition's template serves it, zero-shot
    assert music.status == "broken" and music.others == ["shipped definition (zero-shot)"]
    assert "not valid YAML" in music.problem and music.template.display_name == "Music"
    model, notes = load_model(home)
    assert sorted(model.domains) == ["books", "movies"]
    assert any("music" in n and "YAML" in n for n in notes)


def test_list_and_show_report_source_size_and_metrics(home):
    result = runner.invoke(app, ["domain", "list", "--home", str(home)])
    assert result.exit_code == 0, result.output
    books_line = next(line for line in result.output.splitlines() if line.startswith("books "))
    assert "local" in books_line and "ready" in books_line and "yes" in books_line and "KiB" in books_line
    data = json.loads(runner.invoke(app, ["domain", "list", "--home", str(home), "--json"]).output)
    names = [d["name"] for d in data["domains"]]
    assert names == sorted(names) and {"books", "all_beauty", "digital_music"} <= set(names)
    books = next(d for d in data["domains"] if d["name"] == "books")
    assert books["source"] == "local" and books["size_bytes"] > 0 and "auc" in books["metrics"]
    shown = runner.invoke(app, ["domain", "show", "books", "--home", str(home)])
    assert shown.exit_code == 0 and "metric auc:" in shown.output and "also from:" in shown.output
    missing = runner.invoke(app, ["domain", "show", "nope", "--home", str(home)])
    assert missing.exit_code == 1 and "unknown domain 'nope'" in missing.output


def test_remove_asks_for_confirmation_and_refuses_definitions(home):
    result = runner.invoke(app, ["domain", "remove", "books", "--home", str(home)], input="n\n")
    assert result.exit_code != 0 and (home / "domains" / "books").is_dir()
    result = runner.invoke(app, ["domain", "remove", "books", "--home", str(home)], input="y\n")
    assert result.exit_code == 0 and not (home / "domains" / "books").exists()
    assert "still known from shipped definition" in result.output
    result = runner.invoke(app, ["domain", "remove", "fashion", "--home", str(home), "--yes"])
    assert result.exit_code == 1 and "shipped definition" in result.output
    result = runner.invoke(app, ["domain", "remove", "../core", "--home", str(home), "--yes"])
    assert result.exit_code == 1 and (home / "core" / "manifest.yaml").exists()


class TemplatePlugin:
    """A package that ships only a template for a domain (no DSN yet)."""

    def __init__(self, template):
        self.template = template

    @hookimpl
    def register_domains(self, register):
        register(DomainSpec(name="podcasts", template=self.template, description="podcasts from a package"))


def test_training_takes_templates_from_the_registry_that_prediction_uses(tiny_bert, tmp_path):
    from unictr_core.config import ModelConfig, TrainConfig
    from unictr_core.data.prompts import PromptTemplate
    from unictr_core.store.registry import templates_for
    from unictr_core.fit.training import train_unictr

    template = PromptTemplate.from_dict({"domain": "podcasts", "display_name": "Podcast Shelf",
                                         "parts": ["{domain_name}:", " The item is {title}."]})
    plugins.get_plugin_manager().register(TemplatePlugin(template), name="template_plugin")
    try:
        home = tmp_path / "home"
        chosen = templates_for(["podcasts", "books", "unknown_domain"], home)
        assert chosen.templates["podcasts"] is template  # from the package plugin
        assert "books" in chosen.templates  # shipped definition
        assert "unknown_domain" not in chosen.templates  # the default template
        samples = [s for s in toy_samples(40, domains=("podcasts",))]
        config = ModelConfig(backbone=tiny_bert, tower_dims=[16, 8], max_length=64)
        result = train_unictr(samples, samples[:10], config, TrainConfig(epochs=1, max_steps=1, batch_size=16),
                              templates=chosen, progress=False)
        from unictr_core.store.writes import save_trained

        save_trained(result.model, home)
        model, notes = load_model(home)
        assert notes == []
        assert "Podcast Shelf" in model.templates.for_domain("podcasts").render(samples[0])
    finally:
        plugins.get_plugin_manager(reload=True)


class CountingPlugin:
    """A package plugin that counts how often its ``register_domains`` hook runs."""

    def __init__(self):
        self.calls = 0

    @hookimpl
    def register_domains(self, register):
        self.calls += 1
        register(DomainSpec(name="counted", description="from a counting plugin"))


@pytest.fixture
def counted(monkeypatch):
    """(the counting plugin, the SHA-256 computations of DSN weights), while a command runs."""
    from unictr_core.store import records

    plugin = CountingPlugin()
    plugins.get_plugin_manager().register(plugin, name="counting_plugin")
    hashed: list[str] = []
    real = records.file_sha256

    def counting_sha256(path):
        if Path(path).name == "dsn.safetensors":
            hashed.append(Path(path).parent.name)
        return real(path)

    monkeypatch.setattr(records, "file_sha256", counting_sha256)
    yield plugin, hashed
    plugins.get_plugin_manager(reload=True)


@pytest.mark.parametrize("command", [["domain", "list"], ["domain", "remove", "books"],
                                     ["domain", "remove", "books", "--yes"], ["domain", "show", "books"]])
def test_a_command_runs_each_hook_once_and_checks_each_bundle_once(home, counted, command):
    plugin, hashed = counted
    assert Registry(home).core_fingerprint is not None and plugin.calls == 0 and hashed == []  # building is cheap
    result = runner.invoke(app, [*command, "--home", str(home)], input="y\n")
    assert result.exit_code == 0, result.output
    assert plugin.calls == 1
    assert sorted(hashed) == ["books", "movies", "music"]  # each bundle of the home, once
    if command[1] == "remove":
        assert "still known from shipped definition" in result.output


def test_loading_attaches_each_bundle_with_the_record_the_registry_checked(home, counted):
    plugin, hashed = counted
    model, notes = load_model(home)
    assert sorted(model.dsns) == ["books", "movies", "music"] and plugin.calls == 1
    assert sorted(hashed) == ["books", "movies", "music"]  # checked by the registry, not again by the load


def test_an_undiscovered_registry_says_so_instead_of_listing_nothing(home):
    registry = Registry(home)
    with pytest.raises(RegistryError, match="not discovered"):
        registry.get("books")
    assert registry.discover() is registry and registry.get("books").status == "ready"
