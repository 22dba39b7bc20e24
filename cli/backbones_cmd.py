"""``unictr backbones``: the registered backbones, whether installed and whether converted."""

from __future__ import annotations

import json
from typing import Optional

import typer

from unictr_core import plugins
from unictr_core.modeling import backbone_cache


def _converted(spec: plugins.BackboneSpec) -> Optional[bool]:
    """True/False for backbones that are converted into the cache on first use; None when none is needed."""
    return None if spec.converted is None else bool(spec.converted())


def backbone_rows() -> list[dict]:
    """One dict per registered backbone: name, size, licence, installed, converted, plugin, description."""
    rows = []
    for name, spec in sorted(plugins.backbones().items()):
        row = {"name": name, "size": spec.size, "license": spec.license, "plugin": spec.plugin,
               "description": spec.description}
        try:
            row["installed"] = bool(spec.installed())
            row["converted"] = _converted(spec) if row["installed"] else False
            row["error"] = None
        except Exception as exc:  # one broken backbone must not hide the others
            row["installed"], row["converted"], row["error"] = False, None, f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def _mark(value: Optional[bool]) -> str:
    return "-" if value is None else ("yes" if value else "no")


def format_rows(rows: list[dict]) -> str:
    header = ("NAME", "SIZE", "INSTALLED", "CONVERTED", "LICENCE")
    table = [header] + [
        (r["name"], r["size"], _mark(r["installed"]), _mark(r["converted"]), r["license"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in table]
    for r in rows:
        lines.append(f"\n{r['name']}: {r['description']}")
        if r["error"]:
            lines.append(f"  error: {r['error']}")
    return "\n".join(lines)


def backbones(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    prepare: Optional[str] = typer.Option(
        None, "--prepare", metavar="NAME",
        help="Locate NAME now, converting it into the cache if it is not there yet (first use takes a while)."),
) -> None:
    """List the language-model backbones: size, licence, installed?, converted into the cache?

    CONVERTED '-' means the backbone needs no conversion. The cache is $UNICTR_CACHE or ~/.cache/unictr.
    """
    if prepare is not None:
        specs = plugins.backbones()
        if prepare not in specs:
            typer.secho(f"error: unknown backbone '{prepare}' (known: {', '.join(sorted(specs))})",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        try:
            path = specs[prepare].locate()
        except (FileNotFoundError, backbone_cache.CacheError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        typer.echo(f"{prepare}: {path}", err=json_output)
    rows = backbone_rows()
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(format_rows(rows))
        typer.echo(f"\ncache: {backbone_cache.backbones_dir()}")
