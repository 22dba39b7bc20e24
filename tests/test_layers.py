"""The shape of the code: no import cycle in unictr_core, plugins enter only through hooks, a fast CLI start."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from unictr_core.layers import LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "unictr_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The unictr_core modules a file imports, at module level or inside functions (a lazy import is still one)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py"))
    known = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, known) for p in files}


def find_cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_unictr_core_has_no_import_cycle():
    graph = import_graph()
    assert "unictr_core.store.registry" in graph and graph["unictr_core.store.loading"]  # the walk saw the store
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _layer(module: str) -> int:
    if module == "unictr_core":  # the package itself: its version
        return 0
    return layer_of(module)


def test_the_documentation_quotes_the_layer_order():
    """docs/development.md states LAYERS, one layer a line, in the text block after its "Layers, lowest first"."""
    lines = (ROOT / "docs" / "development.md").read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("Layers, lowest first"))
    start = lines.index("```text", marker) + 1
    quoted = lines[start:lines.index("```", start)]
    assert quoted == [", ".join(names) for names in LAYERS]


def test_every_module_is_in_a_layer():
    assert {_layer(module) for module in import_graph()} == set(range(len(LAYERS)))


def test_no_module_imports_a_later_layer():
    upward = [f"{module} -> {dep}" for module, deps in import_graph().items()
              for dep in deps if _layer(dep) > _layer(module)]
    assert upward == []


def test_no_former_module_path_remains():
    """The modules live in their layer folders only: no flat alias of a moved module (e.g. unictr_core.training)."""
    flat = sorted(p.stem for p in CORE.glob("*.py")) + sorted(p.name for p in CORE.iterdir() if p.is_dir())
    moved = {p.stem for folder in ("data", "modeling", "fit", "store") for p in (CORE / folder).glob("*.py")}
    assert not (set(flat) & moved - {"__init__"}), "a module exists both flat and in a layer folder"
    with pytest.raises(ModuleNotFoundError):
        __import__("unictr_core.training")


def test_no_core_module_names_the_plugins_or_the_cli():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("unictr_plugins", "unictr_cli")]
    assert offenders == []


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["domain", "list", "--home", "{home}"]])
def test_light_commands_import_neither_torch_nor_transformers(argv, tmp_path):
    argv = [a.replace("{home}", str(tmp_path / "home")) for a in argv]
    script = ("import json, sys\n"
              f"sys.argv = ['unictr'] + {argv!r}\n"
              "from unictr_cli.main import main\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(json.dumps({'code': code, 'heavy': sorted(m for m in ('torch', 'transformers', 'sklearn') "
              "if m in sys.modules)}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stderr


def test_the_public_surface_resolves_and_stays_light():
    """Every name of ``unictr_core.__all__`` resolves; importing the package alone loads no torch."""
    code = ("import json, sys, unictr_core; light = 'torch' not in sys.modules; "
            "missing = [n for n in unictr_core.__all__ if getattr(unictr_core, n, None) is None]; "
            "print(json.dumps({'light': light, 'missing': missing}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"light": True, "missing": []}
    import unictr_core

    with pytest.raises(AttributeError, match="no attribute 'training'"):
        unictr_core.training  # noqa: B018 - former flat paths are gone
