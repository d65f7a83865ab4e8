"""Commands that talk to a session: ``send`` (one command) and ``connect`` (interactive)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from session_runtime.cli import jsonlines
from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_json_flag,
    command_exit_status,
    emit_json,
    make_manager,
    session_id_arg,
)
from session_runtime.errors import ProtocolError

if TYPE_CHECKING:
    from session_runtime.client import SessionConnection

__all__ = ["register", "stream_command"]

_PROMPT = "gam> "


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    send = subparsers.add_parser(
        "send",
        help="run one GAM command in a session; exits with the command's exit code",
        description="Run one GAM command in a session, streaming its output as it arrives. "
        "Example: gamgui-session send --id default -- info domain",
    )
    send.add_argument(
        "--id", dest="session_id", type=session_id_arg, required=True, help="the session id"
    )
    send.add_argument("argv", nargs="+", metavar="COMMAND", help="the GAM command, after --")
    add_json_flag(send)
    jsonlines.add_json_lines_flag(send)
    send.set_defaults(handler=_send)

    connect = subparsers.add_parser(
        "connect",
        help="an interactive GAM prompt in a session (one command per line)",
    )
    connect.add_argument(
        "--id", dest="session_id", type=session_id_arg, required=True, help="the session id"
    )
    connect.set_defaults(handler=_connect)


def stream_command(conn: SessionConnection, argv: list[str] | str) -> int:
    """Run a command, writing its output to stdout/stderr as it arrives; return its exit code.

    Ctrl-C asks the session to cancel the command and returns 130, as a shell does.

    Args:
        conn: an open session connection.
        argv: the command, as argv or one command line.
    """
    try:
        for chunk in conn.stream(argv):
            out = sys.stderr if chunk.stream == "stderr" else sys.stdout
            out.write(chunk.data)
            out.flush()
    except KeyboardInterrupt:
        conn.cancel()
        sys.stderr.write("\ncancelled\n")
        return EXIT_INTERRUPTED
    if conn.last_exit is None:
        raise ProtocolError("The session ended the command without an exit status")
    return conn.last_exit.code


def _send(args: argparse.Namespace) -> int:
    manager = make_manager()
    argv: list[str] = args.argv
    if args.json_lines:
        return jsonlines.send(args, manager)
    if args.json:
        result = manager.send_command(args.session_id, shlex.join(argv))
        emit_json(result.model_dump(mode="json"))
        return command_exit_status(result.exit_code)
    with manager.connect(args.session_id) as conn:
        return command_exit_status(stream_command(conn, argv))


def _connect(args: argparse.Namespace) -> int:
    manager = make_manager()
    interactive = sys.stdin.isatty()
    with manager.connect(args.session_id) as conn:
        if interactive:
            sys.stderr.write(
                f"connected to {args.session_id}; one GAM command per line, Ctrl-D to leave\n"
            )
        last = EXIT_OK
        while True:
            if interactive:
                sys.stderr.write(_PROMPT)
                sys.stderr.flush()
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                sys.stderr.write("\n")
                continue
            if not line:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line in ("exit", "quit"):
                break
            last = command_exit_status(stream_command(conn, line))
            if interactive and last != EXIT_OK:
                sys.stderr.write(f"[exit {last}]\n")
    return last if not interactive else (EXIT_OK if last == EXIT_OK else EXIT_FAILURE)
