"""Prove the declared floors: install the minimum of every range, import, run the unit tests.

Usage: python scripts/check_floors.py [--extras agent,server] [--keep DIR]

A range in pyproject.toml promises that its lowest version works. This script
makes a fresh virtualenv, installs exactly ``name==floor`` for every direct
dependency of the base package and the chosen extras (transitive dependencies
resolve as pip picks them), installs the project itself without dependencies,
imports every runtime module, and runs the tests that need no outside world
(unit, runtime, the Kubernetes emulator and the backend contract). Exit status
0 means the floors hold. It downloads and installs a whole environment, so it
is opt-in (minutes, not seconds); run it after changing a range.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Test tools come from constraints.txt: they are not what the floors are about. gam7
#: is the program sessions run (the ``gam`` extra, never imported by the runtime).
TEST_TOOLS = (
    "gam7",
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "PyYAML",
    "psutil",
    "kubernetes-validate",
)
MODULES = (
    "session_runtime.agent",
    "session_runtime.backends.kubernetes",
    "session_runtime.backends.local",
    "session_runtime.cli",
    "session_runtime.client",
    "session_runtime.doctor",
    "session_runtime.manager",
    "session_runtime.retry",
)
TESTS = ("tests/unit", "tests/runtime", "tests/kubernetes", "tests/contract")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def floors(extras: list[str]) -> list[str]:
    """Return ``name==floor`` for every direct dependency of the base and ``extras``.

    Raises:
        ValueError: a dependency has no ``>=`` floor (it promises nothing to test).
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None or match.group(1) == project["name"]:
            continue
        name, spec = match.group(1), match.group(3)
        floor = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        if floor is None:
            raise ValueError(f"{requirement!r} has no >= floor")
        pins[name.lower()] = f"{name}=={floor.group(1)}"
    return sorted(pins.values())


def test_tools() -> list[str]:
    """Return the pinned test tools from constraints.txt."""
    wanted = {t.lower() for t in TEST_TOOLS}
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [line for line in lines if line.split("==")[0].lower() in wanted]


def run(argv: list[str]) -> None:
    """Run one step, echoing it; raise on failure."""
    sys.stderr.write("+ " + " ".join(argv) + "\n")
    subprocess.run(argv, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    """Build the floors environment and run the checks; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="agent,server", help="extras whose floors to test")
    parser.add_argument("--keep", type=Path, help="build the venv here and keep it")
    args = parser.parse_args(argv)
    pins = floors([e for e in args.extras.split(",") if e])
    with tempfile.TemporaryDirectory() as tmp:
        venv = args.keep or Path(tmp) / "floors"
        python = str(venv / "bin" / "python")
        try:
            run([sys.executable, "-m", "venv", str(venv)])
            run([python, "-m", "pip", "install", "-q", *pins, *test_tools()])
            run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", "."])
            run([python, "-m", "pip", "list", "--format=freeze"])
            imports = "; ".join(f"import {m}" for m in MODULES)
            run([python, "-c", imports])
            tests = [t for t in TESTS if (ROOT / t).is_dir()]
            run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests])
        except subprocess.CalledProcessError as exc:
            sys.stderr.write(f"floors check failed: {exc}\n")
            return 1
    sys.stdout.write("floors hold: " + ", ".join(pins) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
