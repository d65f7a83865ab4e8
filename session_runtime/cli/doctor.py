"""``doctor``: the troubleshooting checklist (infrastructure, session, proxy, server config).

The checklist itself belongs in ``session_runtime.doctor``; this module only
wires it into the CLI. Until that module exists the command says so and fails.
"""

from __future__ import annotations

import argparse
import sys

from session_runtime.cli._common import EXIT_FAILURE, add_json_flag

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    doctor = subparsers.add_parser(
        "doctor", help="run the troubleshooting checklist and say what to fix"
    )
    add_json_flag(doctor)
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    sys.stderr.write("error: doctor is not available in this version\n")
    return EXIT_FAILURE
