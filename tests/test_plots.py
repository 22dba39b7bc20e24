"""The charts of docs/results.md: drawn from docs/results-data.json by benchmarks/plot_results.py, so a chart cannot
drift from its data, nor its data from the tables of the page."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"


def plot_results():
    spec = importlib.util.spec_from_file_location("plot_results", ROOT / "benchmarks" / "plot_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_charts_are_what_their_data_draws(tmp_path):
    plots = plot_results()
    charts = plots.load()
    written = plots.write_charts(charts, tmp_path)
    assert [p.name for p in written] == [c["file"] for c in charts]
    for path in written:
        committed = ROOT / "docs" / "img" / path.name
        assert committed.is_file(), f"{committed} is missing: run python benchmarks/plot_results.py"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} differs from what docs/results-data.json draws: run python benchmarks/plot_results.py")
    assert plots.main(["--check"]) == 0


def test_every_figure_of_the_data_stands_in_the_results_page_and_every_chart_is_shown():
    plots = plot_results()
    page = RESULTS.read_text(encoding="utf-8")
    for chart in plots.load():
        assert f"(img/{chart['file']})" in page, f"docs/results.md does not show {chart['file']}"
        for group in chart["groups"]:
            assert len(group["values"]) == len(chart["series"]), group
            figures = [f"{v:.{chart['digits']}f}" for v in group["values"]]
            figures += [f"[{low:.3f}, {high:.3f}]" for low, high in group.get("intervals") or []]
            missing = [f for f in figures if f not in page]
            assert missing == [], f"{chart['file']}, {group['label']}: {missing} not in docs/results.md"


def test_a_chart_is_well_formed_svg_with_one_bar_per_value():
    import xml.etree.ElementTree as ElementTree

    plots = plot_results()
    for chart in plots.load():
        root = ElementTree.fromstring(plots.draw(chart))
        bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
        assert len(bars) == sum(len(g["values"]) for g in chart["groups"])
        assert all(float(b.get("width")) >= 0 for b in bars)
        assert re.search(r"<title>.+</title>", plots.draw(chart))
