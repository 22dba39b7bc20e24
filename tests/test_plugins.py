"""The plugin manager: external plugins through entry points, broken plugins reported, UNICTR_LOAD_PLUGINS."""

from __future__ import annotations

import json
import types
from typing import Iterator

import pytest
from typer.testing import CliRunner

from unictr_cli.main import app
from unictr_core import plugins
from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import DomainSpec
from unictr_core.data.prompts import PromptTemplate
from unictr_core.store.registry import Registry

runner = CliRunner()


def fake_plugin_module(name: str, domain: str) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def register_domains(register):
        register(DomainSpec(name=domain, template=PromptTemplate(display_name="Garden Tools"),
                            description="from a fake external plugin"))

    module.register_domains = register_domains
    return module


class FakeEntryPoint:
    """Enough of importlib.metadata.EntryPoint for the plugin manager."""

    def __init__(self, name: str, load, dist_name: str):
        self.name = name
        self._load = load
        self.dist = types.SimpleNamespace(name=dist_name)

    def load(self):
        return self._load()


def raise_on_import():
    raise ImportError("No module named 'missing_dependency'")


def installed(monkeypatch, eps: list) -> Iterator[None]:
    """The plugin manager as if ``eps`` were the installed entry points (a fixture body)."""
    monkeypatch.setattr(plugins, "entry_points", lambda group: eps if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.get_plugin_manager(reload=True)
    yield
    monkeypatch.undo()
    plugins.get_plugin_manager(reload=True)


@pytest.fixture
def external_plugins(monkeypatch):
    """A working and a broken external plugin, as if two packages were installed."""
    good = fake_plugin_module("garden_plugin", "garden_tools")
    yield from installed(monkeypatch, [FakeEntryPoint("broken_plugin", raise_on_import, "unictr-broken"),
                                       FakeEntryPoint("garden_plugin", lambda: good, "unictr-garden")])


def test_plugin_raising_on_import_is_listed_as_broken_and_the_rest_works(external_plugins, tmp_path):
    broken = plugins.broken_plugins()
    assert [b.name for b in broken] == ["broken_plugin"]
    assert "missing_dependency" in broken[0].error
    registry = Registry.open(tmp_path / "home")
    entry = registry.get("garden_tools")
    assert entry is not None and entry.source == "package unictr-garden" and entry.status == "zero-shot"
    assert registry.get("books").source == "shipped definition"  # built-in plugin still serves
    assert "minilm" in plugins.backbones()

    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "BROKEN" in result.output and "missing_dependency" in result.output
    rows = json.loads(runner.invoke(app, ["plugins", "--json"]).output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["broken_plugin"]["error"].startswith("ImportError")
    assert by_name["garden_plugin"]["hooks"] == ["register_domains"]
    assert by_name["garden_plugin"]["distribution"] == "unictr-garden" and not by_name["garden_plugin"]["builtin"]
    assert by_name["unictr_plugins.local_domains"]["builtin"] and by_name["unictr_plugins.local_domains"]["error"] is None
    assert by_name["unictr_plugins.minilm_backbone"]["hooks"] == ["register_backbones"]


def test_load_plugins_env_limits_external_plugins(external_plugins, monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "unictr-garden")
    plugins.get_plugin_manager(reload=True)
    assert plugins.broken_plugins() == []  # the broken one was not even tried
    assert Registry.open(tmp_path).get("garden_tools") is not None
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "")
    plugins.get_plugin_manager(reload=True)
    assert Registry.open(tmp_path).get("garden_tools") is None
    assert Registry.open(tmp_path).get("books") is not None  # built-in plugins always load


def test_plugin_whose_hook_raises_is_reported_and_registers_nothing(tmp_path):
    class HalfBroken:
        @hookimpl
        def register_domains(self, register, home):
            register(DomainSpec(name="first_half"))
            raise RuntimeError(f"cannot read {home}")

    pm = plugins.get_plugin_manager()
    pm.register(HalfBroken(), name="half_broken")
    try:
        registry = Registry.open(tmp_path)
        assert registry.get("first_half") is None
        assert registry.get("gift_cards") is not None
        errors = {b.name: b.error for b in plugins.broken_plugins()}
        assert "register_domains: RuntimeError" in errors["half_broken"]
        result = runner.invoke(app, ["domain", "list", "--home", str(tmp_path)])
        assert result.exit_code == 0 and "gift_cards" in result.output
    finally:
        plugins.get_plugin_manager(reload=True)


def test_builtin_plugins_are_registered_like_external_ones():
    pm = plugins.get_plugin_manager(reload=True)
    names = {name for name, _ in pm.list_name_plugin()}
    assert set(plugins.builtin_plugins()) <= names
    rows = {r["name"]: r for r in plugins.plugin_rows()}
    assert rows["unictr_plugins.baselines"]["hooks"] == ["register_baselines"]
    assert rows["unictr_plugins.local_domains"]["hooks"] == ["register_domains"]


def test_built_in_plugins_come_from_their_entry_point_group_and_a_stale_install_says_so(monkeypatch):
    assert plugins.builtin_plugins() == ("unictr_plugins.minilm_backbone", "unictr_plugins.llm_backbones",
                                         "unictr_plugins.baselines", "unictr_plugins.local_domains")
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group: [] if group == plugins.BUILTIN_GROUP else plugins.entry_points(group=group))
    try:
        plugins.get_plugin_manager(reload=True)
        broken = {b.name: b.error for b in plugins.broken_plugins()}
        assert "reinstall" in broken[plugins.BUILTIN_GROUP] and "minilm" not in plugins.backbones()
    finally:
        monkeypatch.undo()
        plugins.get_plugin_manager(reload=True)
    assert "minilm" in plugins.backbones() and plugins.BUILTIN_GROUP not in {b.name for b in plugins.broken_plugins()}
