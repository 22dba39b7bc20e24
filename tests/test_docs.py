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


def test_every_documented_command_line_uses_options_the_command_has():
    """Each `unictr ...` in README.md, docs/ and the example package names only options its command has."""
    import typer

    from unictr_cli.main import app

    root = typer.main.get_command(app)
    pages = [ROOT / "README.md", ROOT / "examples" / "third_party_domain" / "README.md",
             *[p for p in sorted((ROOT / "docs").rglob("*.md")) if "incoming" not in p.parts]]
    unknown, checked = [], 0
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for match in re.finditer(r"(?<![\w./\[-])unictr ([a-z][a-z0-9 _\-]*)([^`|;&)]*)", line):
                words, command = (match.group(1) + match.group(2)).split(), root
                while words and hasattr(command, "commands") and words[0] in command.commands:
                    command = command.commands[words.pop(0)]
                if hasattr(command, "commands"):
                    continue  # prose such as "unictr serves", or a group
                names = {o for p in command.params
                         for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
                checked += 1
                unknown += [f"{page.relative_to(ROOT)}:{number}: {command.name} {option}"
                            for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", match.group(0))
                            if option not in names | {"--help"}]
    assert checked > 50 and unknown == []
