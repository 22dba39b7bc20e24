"""The documentation: the site builds with no warning (broken links and references fail), README stays short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documentation_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, anchor or API reference fails the build (the extra `docs`)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"mkdocs build --strict failed (pip install -e '.[docs]' if mkdocs is missing):\n"
                                  f"{done.stdout}\n{done.stderr}")
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "workflows" / "index.html").is_file()


def headings(text: str) -> list[str]:
    inside_code, found = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        elif not inside_code and line.startswith("#"):
            found.append(line)
    return found


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target) and not target.startswith("../"):  # ../shared: beside the tree
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_no_issue_numbers_in_user_facing_headings():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [f"{page.relative_to(ROOT)}: {line}" for page in pages if "incoming" not in page.parts
             for line in headings(page.read_text()) if re.search(r"\bissues? \d", line, re.IGNORECASE)]
    assert found == []
