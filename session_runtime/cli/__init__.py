"""``gamgui-session`` (also ``python -m session_runtime``): the runtime from a shell.

One module per command group, each with ``register(subparsers)`` that adds its
commands and sets ``handler`` on them; :data:`COMMAND_MODULES` lists them in
help order. To add a command group, write a module with ``register`` and list
it there.

Exit codes: 0 success, 1 failure (the error printed as one line with its hint,
or as JSON with ``--json``), 2 usage error; ``send`` exits with the command's
own exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from session_runtime import __version__
from session_runtime.cli import checks, command, console, doctor, local, metrics, sessions
from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Handler,
    print_error,
)
from session_runtime.errors import SessionError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Command groups, in the order ``--help`` lists them. Each has ``register(subparsers)``.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    local,
    sessions,
    command,
    console,
    checks,
    doctor,
    metrics,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (every command group registered)."""
    parser = argparse.ArgumentParser(
        prog="gamgui-session",
        description="Create, use and check gamgui GAM sessions (local stack or Kubernetes). "
        "Configuration comes from WEBSOCKET_* variables or .env.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script exits with it).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    as_json = bool(getattr(args, "json", False))
    try:
        return handler(args)
    except SessionError as exc:
        print_error(exc, as_json=as_json)
        return EXIT_FAILURE
    except OSError as exc:  # e.g. an unreadable state directory: one line, not a traceback
        print_error(SessionError("Operating system error", cause=str(exc)), as_json=as_json)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
