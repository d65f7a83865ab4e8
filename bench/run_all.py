"""Run every benchmark at full size, one after another, each in its own process.

A failing benchmark does not stop the others; the exit status is the number of
benchmarks that failed. ``--write`` is passed on, so each updates its own rows in
BENCHMARKS.md.

    python bench/run_all.py [--write]
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from _common import base_parser

__all__ = ["BENCHMARKS", "main"]

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "proxy_overhead.py",
    "scale.py",
    "session_start.py",
    "streaming.py",
    "pulumi_eval.py",
    "console_echo.py",
    "observe_overhead.py",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run each benchmark script; return how many failed."""
    args = base_parser(__doc__.splitlines()[0] if __doc__ else "all").parse_args(argv)
    failed = 0
    for name in BENCHMARKS:
        cmd = [sys.executable, str(HERE / name), *(["--write"] if args.write else [])]
        print(f"-- {name}", flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"-- {name} failed", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
