"""``doctor``: the troubleshooting checklist (infrastructure, session, proxy, server config).

The checklist itself lives in :mod:`session_runtime.doctor`; this module only
wires it into the CLI. The exit code is 0 only when no check failed.
"""

from __future__ import annotations

import argparse
import sys

from session_runtime.cli._common import EXIT_FAILURE, EXIT_OK, add_json_flag, emit_json
from session_runtime.doctor import run_doctor

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    doctor = subparsers.add_parser(
        "doctor", help="run the troubleshooting checklist and say what to fix"
    )
    doctor.add_argument(
        "--full",
        action="store_true",
        help="also create a fresh session, run a command in it and close it",
    )
    add_json_flag(doctor)
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    report = run_doctor(full=args.full)
    if args.json:
        emit_json({"ok": report.ok, "checks": [c.model_dump() for c in report.checks]})
    else:
        sys.stdout.write(report.render() + "\n")
        sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_FAILURE
