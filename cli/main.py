"""The ``unictr`` command line."""

from __future__ import annotations

import typer

from unictr_cli import model_cmds, plugins_cmd
from unictr_cli.domain_cmds import domain_app
from unictr_cli.backbones_cmd import backbones
from unictr_cli.benchmark_cmd import benchmark
from unictr_cli.data_cmd import data_app
from unictr_cli.prepare_cmd import prepare_app
from unictr_cli.prompts_cmd import prompts
from unictr_cli.serve_cmd import serve

app = typer.Typer(
    name="unictr",
    help="UniCTR: multi-domain CTR prediction with a language-model backbone, a zero-shot general network and "
    "one pluggable network per domain (Uni-CTR, Fu et al., TOIS 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unictr {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed distribution's version (pyproject.toml); the package's own when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("unictr")
    except metadata.PackageNotFoundError:
        from unictr_core import __version__

        return __version__


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """UniCTR: multi-domain CTR prediction with a language-model backbone, a zero-shot general network and one
    pluggable network per domain (Uni-CTR, Fu et al., TOIS 2024)."""


app.command()(model_cmds.train)
app.command()(model_cmds.evaluate)
app.command()(model_cmds.predict)
app.command()(model_cmds.rank)
app.command()(benchmark)
app.command()(prompts)
app.command()(backbones)
app.command()(serve)

data_app.add_typer(prepare_app, name="prepare")
app.add_typer(data_app, name="data")
app.add_typer(domain_app, name="domain")
app.command("plugins")(plugins_cmd.plugins)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
