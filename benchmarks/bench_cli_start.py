"""Start time of the light `unictr` commands, against a reference revision measured in the same run.

Runs ``unictr --help``, ``unictr plugins`` and ``unictr domain list --home HOME`` (a tiny trained home built
first) in fresh processes, alternating between this working tree and the source of ``--reference`` (a git
revision, extracted to a temporary folder), and prints the best wall time of each, their ratio, and which of
torch / transformers / scikit-learn each one imported::

    python benchmarks/bench_cli_start.py --reference main --repeats 5

Both trees run with this interpreter and its installed packages; a revision is imported from its own source
(``PYTHONPATH``), so only the code differs. Best of ``--repeats``: on a shared machine the minimum is the
least disturbed run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMANDS = (["--help"], ["plugins"], ["domain", "list", "--home", "{home}"])
PROBE = ("import json, sys\n"
         "sys.argv = ['unictr'] + json.loads(sys.argv[1])\n"
         "from unictr_cli.main import main\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "sys.stderr.write('\\nHEAVY=' + ','.join(m for m in ('torch', 'transformers', 'sklearn') "
         "if m in sys.modules) + '\\n')\n")


def extract(revision: str, folder: Path) -> Path:
    """The source of ``revision`` in ``folder``, laid out like the installed packages (``unictr_cli`` = ``cli``)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "unictr_cli").symlink_to(folder / "cli")
    return folder


def tiny_home(folder: Path) -> Path:
    """A home with a tiny trained core and three domain bundles (built with this tree's CLI)."""
    from unictr_core.modeling.tiny import make_tiny_backbone

    backbone = make_tiny_backbone(folder / "backbone", "bert")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for args in (["data", "generate", "--out", str(folder / "data"), "--scale", "0.05"],
                 ["train", "--data", str(folder / "data"), "--home", str(folder / "home"), "--backbone",
                  str(backbone), "--epochs", "1", "--max-steps", "2", "--tower", "16,8", "--max-length", "64"]):
        subprocess.run([sys.executable, "-m", "unictr_cli.main", *args], check=True, capture_output=True, env=env)
    return folder / "home"


def start(tree: Path, command: list[str]) -> tuple[float, str]:
    """Wall seconds of one fresh process running ``command`` from ``tree``, and the heavy modules it imported."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(command)], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - started
    heavy = [line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    return seconds, (heavy[-1] if heavy else "?") or "none"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per command and tree; the fastest counts")
    args = parser.parse_args(argv)

    from unictr_core.data.tables import format_table

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        trees = {"reference": extract(args.reference, scratch / "reference"), "this tree": ROOT}
        home = tiny_home(scratch / "tiny")
        results = []
        for command in COMMANDS:
            command = [part.replace("{home}", str(home)) for part in command]
            best = {name: (float("inf"), "") for name in trees}
            for _ in range(args.repeats):
                for name, tree in trees.items():  # alternating: both see the same load
                    seconds, heavy = start(tree, command)
                    best[name] = min(best[name], (seconds, heavy), key=lambda pair: pair[0])
            results.append({"command": "unictr " + " ".join(c if "/" not in c else "HOME" for c in command),
                            "reference_s": best["reference"][0], "reference_imports": best["reference"][1],
                            "this_s": best["this tree"][0], "this_imports": best["this tree"][1]})
    print(f"reference: {args.reference}; best of {args.repeats} fresh processes each, alternating; "
          f"{os.cpu_count()} CPUs (other jobs may share them)")
    print(format_table(["command", "reference s", "this tree s", "ratio", "reference imports", "this tree imports"],
                       [[r["command"], f"{r['reference_s']:.2f}", f"{r['this_s']:.2f}",
                         f"{r['reference_s'] / r['this_s']:.1f}x", r["reference_imports"], r["this_imports"]]
                        for r in results]))
    return results


if __name__ == "__main__":
    main()
