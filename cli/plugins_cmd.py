"""``unictr plugins``: installed plugins (built-in and external), the hooks they implement, and broken ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from unictr_cli.common import home_option, resolve_home
from unictr_core.data.tables import format_table


def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
            home: Optional[Path] = home_option()) -> None:
    """List plugins and the hooks they implement; a plugin that failed to load, or whose hook raised or
    registered something invalid, is shown BROKEN with its error (the other plugins are unaffected)."""
    from unictr_core.plugins import plugin_rows

    rows = plugin_rows(resolve_home(home))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = []
    for row in rows:
        origin = "built-in" if row["builtin"] else (
            f"{row['distribution']} {row['version'] or ''}".strip() if row["distribution"] else "external")
        table.append([row["name"], origin, ", ".join(row["hooks"]) or "-",
                      "ok" if row["error"] is None else "BROKEN"])
    typer.echo(format_table(["plugin", "from", "hooks", "status"], table))
    for row in rows:
        if row["error"] is not None:
            typer.secho(f"broken plugin {row['name']}: {row['error']}", fg=typer.colors.RED, err=True)
