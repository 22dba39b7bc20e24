"""Draw the charts of docs/results.md as SVG bar charts, from the figures in docs/results-data.json.

Pure Python (no plotting library): each chart is a horizontal bar chart of one or more series, with an
optional 95 % interval per bar, drawn on an axis that starts at AUC 0.5 (chance)::

    python benchmarks/plot_results.py           # writes docs/img/<chart>.svg
    python benchmarks/plot_results.py --check   # exit 1 if a committed chart is not what its data draws

The figures in the data file are copied from the tables of docs/results.md; tests/test_plots.py checks that
every one of them stands in the page and that the committed charts are exactly what this script draws.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "results-data.json"
OUT = ROOT / "docs" / "img"

COLOURS = ("#4c72b0", "#dd8452")  # one per series (at most two)
HIGHLIGHT = "#c44e52"  # a single-series bar marked "highlight"
WIDTH, LABEL_WIDTH, PLOT_WIDTH = 760, 290, 380
BAR, GROUP_GAP, TOP = 16, 8, 52


def x_of(value: float, axis: list[float]) -> float:
    """The horizontal position of ``value`` on ``axis`` ([low, high, tick step])."""
    low, high, _ = axis
    return LABEL_WIDTH + (min(max(value, low), high) - low) / (high - low) * PLOT_WIDTH


def ticks(axis: list[float]) -> list[float]:
    low, high, step = axis
    count = round((high - low) / step)
    return [round(low + i * step, 6) for i in range(count + 1)]


def text(x: float, y: float, content: str, anchor: str = "start", extra: str = "", size: int = 12) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-family="sans-serif" font-size="{size}"'
            f'{extra}>{escape(content)}</text>')


def group_bars(chart: dict, group: dict, top: float) -> list[str]:
    """The bars of one group (one per series), its label, values and intervals, from height ``top``."""
    axis, digits, series = chart["axis"], chart["digits"], chart["series"]
    base = x_of(axis[0], axis)
    height = BAR * len(series)
    parts = [text(LABEL_WIDTH - 8, top + height / 2 + 4, group["label"], "end")]
    for i, value in enumerate(group["values"]):
        y = top + i * BAR
        colour = HIGHLIGHT if group.get("highlight") else COLOURS[i]
        end = x_of(value, axis)
        parts.append(f'<rect class="bar" x="{base:.1f}" y="{y + 2:.1f}" width="{end - base:.1f}" '
                     f'height="{BAR - 4}" fill="{colour}"/>')
        label_at = end
        interval = (group.get("intervals") or [None] * len(series))[i]
        if interval is not None:
            low, high = (x_of(v, axis) for v in interval)
            middle = y + BAR / 2
            parts.append(f'<path d="M{low:.1f} {middle:.1f}H{high:.1f}M{low:.1f} {middle - 4:.1f}V{middle + 4:.1f}'
                         f'M{high:.1f} {middle - 4:.1f}V{middle + 4:.1f}" stroke="#333" fill="none"/>')
            label_at = max(end, high)
        parts.append(text(label_at + 5, y + BAR - 4, f"{value:.{digits}f}", extra=' fill="#333"'))
    return parts


def draw(chart: dict) -> str:
    """The SVG text of one chart."""
    axis, series = chart["axis"], chart["series"]
    body, top = [], TOP
    for group in chart["groups"]:
        body += group_bars(chart, group, top)
        top += BAR * len(series) + GROUP_GAP
    bottom = top - GROUP_GAP + 6
    grid = []
    for tick in ticks(axis):
        x = x_of(tick, axis)
        grid.append(f'<path d="M{x:.1f} {TOP - 4}V{bottom:.1f}" stroke="#ddd"/>')
        grid.append(text(x, bottom + 16, f"{tick:.2f}", "middle"))
    legend = []
    if len(series) > 1:
        for i, name in enumerate(series):
            x = LABEL_WIDTH + i * 120
            legend.append(f'<rect class="legend" x="{x}" y="{bottom + 28:.1f}" width="12" height="12" '
                          f'fill="{COLOURS[i]}"/>')
            legend.append(text(x + 18, bottom + 38, name))
    height = bottom + (50 if legend else 30)
    head = [text(10, 20, chart["title"], extra=' font-weight="bold"', size=14),
            text(10, 38, chart["note"], extra=' fill="#555"')]
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
             f'viewBox="0 0 {WIDTH} {height:.0f}" role="img">',
             f"<title>{escape(chart['title'])}</title>", '<rect width="100%" height="100%" fill="white"/>',
             *head, *grid, *body, *legend, "</svg>"]
    return "\n".join(lines) + "\n"


def load(path: Path = DATA) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["charts"]


def write_charts(charts: list[dict], out: Path = OUT) -> list[Path]:
    """Write every chart under ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts:
        path = out / chart["file"]
        path.write_text(draw(chart), encoding="utf-8")
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the figures (JSON)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the SVG files go")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a chart in --out differs")
    args = parser.parse_args(argv)
    charts = load(args.data)
    if args.check:
        stale = [c["file"] for c in charts if not (args.out / c["file"]).is_file()
                 or (args.out / c["file"]).read_text(encoding="utf-8") != draw(c)]
        print("\n".join(f"out of date: {args.out / name}" for name in stale) or "every chart matches its data")
        return 1 if stale else 0
    for path in write_charts(charts, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
