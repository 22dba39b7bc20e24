"""The command line describes itself: every option has a help text, a name means one thing, `--version`."""

from __future__ import annotations

from importlib import metadata

import typer
from typer.testing import CliRunner

from unictr_cli.main import app

runner = CliRunner()


def options_by_command() -> dict[str, list]:
    """Every option of every command, keyed by the command's path (``domain add``)."""
    found: dict[str, list] = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, path + [name])
        else:
            found[" ".join(path)] = [p for p in command.params if getattr(p, "param_type_name", "") == "option"]

    walk(typer.main.get_command(app), [])
    return found


def test_every_option_of_every_command_has_a_description():
    commands = options_by_command()
    assert {"train", "domain add", "serve", "data prepare movielens"} <= set(commands)
    missing = [f"{command} {'/'.join(option.opts)}" for command, options in commands.items() for option in options
               if not (option.help or "").strip()]
    assert missing == []


def test_max_rows_means_one_thing_wherever_it_appears():
    helps = {command: option.help for command, options in options_by_command().items() for option in options
             if "--max-rows" in option.opts}
    assert set(helps) == {"train", "benchmark", "domain add"}
    assert len(set(helps.values())) == 1 and "training rows per domain" in next(iter(helps.values()))


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"unictr {metadata.version('unictr')}"


def test_data_generate_help_states_the_rows_the_generator_writes(tmp_path):
    import re
    from collections import Counter

    from unictr_core.data.synthetic import write_builtin_dataset

    dataset = write_builtin_dataset(tmp_path / "data", seed=0, scale=1.0)
    rows = Counter(s.domain for s in [*dataset.train, *dataset.valid, *dataset.test])
    help_text = " ".join(runner.invoke(app, ["data", "generate", "--help"], terminal_width=200).output.split())
    help_text = re.sub(r"[│ ]+", " ", help_text)
    stated = {name: int(count) for name, count in re.findall(r"([a-z_]+) (\d+)(?:,| and| rows)", help_text)}
    assert rows["board_games"] == 1000
    assert stated == dict(rows)
    assert f"{sum(rows.values())} rows in all" in help_text
