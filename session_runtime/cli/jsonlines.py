"""``--json-lines`` for ``create`` and ``send``: events for servers that are not written in Python.

Every line on stdout is one JSON object with a ``type``, printed (and flushed)
as it happens; nothing else is written to stdout. A Node server reads the lines
of a spawned process (``readline`` over ``child.stdout``), never one buffered
blob, so a 50 MB ``print users`` is no problem for ``execFile``'s buffer limit
or for this process's memory: each output chunk is written and forgotten.

=========== ====================================================================
``type``    fields
=========== ====================================================================
progress    ``session_id``, ``phase``, ``message``, ``at`` (create, while waiting)
accepted    the session (``create --no-wait``: the backend took it, not ready yet)
ready       the session (``create``: it answers through the proxy)
started     ``id``, ``argv`` (send)
output      ``id``, ``stream`` (stdout, stderr, tty), ``data``, ``seq`` (send)
gap         ``id``, ``from_seq``, ``to_seq``: output the session could not keep (send)
exit        ``id``, ``code``, ``duration_ms``, ``cancelled``, ``timed_out``, ``seq`` (send)
error       the typed error's ``to_dict()``: ``error``, ``message``, ``cause``, ``hint``
=========== ====================================================================

A session is ``session_id``, ``websocket_url``, ``websocket_path``, ``status``,
``created_at`` and, with ``--show-token`` only, ``token``.

Exit status (:data:`EXIT_STATUSES`): 0 success; 1 a runtime failure (an
``error`` line says which); 2 a usage error (nothing on stdout); 3 GAM ran and
exited non-zero (its own code is in the ``exit`` line); 4 the command timed
out; 130 interrupted (the command was cancelled).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TextIO

from pydantic import BaseModel

from session_runtime.cli._common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from session_runtime.errors import CommandTimeoutError, SessionError
from session_runtime.manager import SessionManager
from session_runtime.models import ProgressEvent, SessionInfo
from session_runtime.protocol import ExitMessage, GapMessage, OutputMessage, StartedMessage

__all__ = [
    "EVENT_TYPES",
    "EXIT_COMMAND_FAILED",
    "EXIT_COMMAND_TIMEOUT",
    "EXIT_STATUSES",
    "JsonLines",
    "add_json_lines_flag",
    "create",
    "exit_status",
    "send",
]

#: GAM ran to its exit and reported a non-zero code (the code is in the ``exit`` line).
EXIT_COMMAND_FAILED = 3
#: The command ran longer than the command timeout (client or session side).
EXIT_COMMAND_TIMEOUT = 4
#: Every exit status of ``--json-lines``, and what it means (docs/cli.md prints this table).
EXIT_STATUSES: dict[int, str] = {
    EXIT_OK: "success: the session is ready (create) or GAM exited 0 (send)",
    EXIT_FAILURE: "runtime failure: the error line says which (session, proxy, agent ...)",
    EXIT_USAGE: "usage error: bad arguments; nothing is printed on stdout",
    EXIT_COMMAND_FAILED: "GAM ran and exited non-zero: its own code is in the exit line",
    EXIT_COMMAND_TIMEOUT: "the command timed out and was cancelled",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C / SIGINT): the command was cancelled",
}
#: Every ``type`` a line may have.
EVENT_TYPES: tuple[str, ...] = (
    "progress",
    "accepted",
    "ready",
    "started",
    "output",
    "gap",
    "exit",
    "error",
)


def add_json_lines_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json-lines`` to a command (exclusive with ``--json`` at run time).

    Args:
        parser: the command's parser.
    """
    parser.add_argument(
        "--json-lines",
        action="store_true",
        help="print one JSON object per line as things happen (see docs/cli.md for the "
        "types and exit statuses)",
    )


class JsonLines:
    """Writes events, one JSON object per line, flushed at once.

    Args:
        stream: where to write (stdout by default).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def emit(self, kind: str, data: dict[str, object]) -> None:
        """Write one event line.

        Args:
            kind: one of :data:`EVENT_TYPES`.
            data: its fields (JSON-ready; never a token unless asked for).
        """
        self._stream.write(json.dumps({"type": kind, **data}, default=str) + "\n")
        self._stream.flush()

    def progress(self, event: ProgressEvent) -> None:
        """A progress callback for :meth:`SessionManager.create_session`."""
        self.emit("progress", event.model_dump(mode="json"))

    def error(self, exc: SessionError) -> None:
        """Write the error line of a typed error."""
        self.emit("error", dict(exc.to_dict()))


def _usage(args: argparse.Namespace) -> int | None:
    if getattr(args, "json", False):
        sys.stderr.write("error: --json and --json-lines exclude each other\n")
        return EXIT_USAGE
    return None


def create(args: argparse.Namespace, manager: SessionManager, out: JsonLines | None = None) -> int:
    """``create --json-lines``: progress lines, then ``ready`` (or ``accepted``), or ``error``.

    Args:
        args: the parsed ``create`` arguments.
        manager: the manager to create with.
        out: the writer (stdout by default).
    """
    out = out or JsonLines()
    if (status := _usage(args)) is not None:
        return status
    try:
        info: SessionInfo = manager.create_session(
            args.session_id,
            command=args.command,
            credentials_secret=args.credentials_secret,
            wait=not args.no_wait,
            progress=out.progress,
        )
    except SessionError as exc:
        out.error(exc)
        return EXIT_FAILURE
    out.emit(
        "accepted" if args.no_wait else "ready", info.public_dict(include_token=args.show_token)
    )
    return EXIT_OK


def send(args: argparse.Namespace, manager: SessionManager, out: JsonLines | None = None) -> int:
    """``send --json-lines``: ``started``, ``output``/``gap`` lines, ``exit``; or ``error``.

    The exit status tells a runtime failure (1) from GAM's own non-zero exit (3).

    Args:
        args: the parsed ``send`` arguments.
        manager: the manager to send with.
        out: the writer (stdout by default).
    """
    out = out or JsonLines()
    if (status := _usage(args)) is not None:
        return status
    argv: list[str] = args.argv
    try:
        with (
            manager.connect(args.session_id) as conn,
            conn.command(shlex.join(argv), timeout=manager.settings.command_timeout) as cmd,
        ):
            try:
                for event in cmd.events():
                    if isinstance(event, StartedMessage | OutputMessage | GapMessage | ExitMessage):
                        out.emit(event.type, _fields(event))
            except KeyboardInterrupt:
                cmd.cancel()
                return EXIT_INTERRUPTED
            exit_message = cmd.exit
    except CommandTimeoutError as exc:
        out.error(exc)
        return EXIT_COMMAND_TIMEOUT
    except SessionError as exc:
        out.error(exc)
        return EXIT_FAILURE
    return exit_status(exit_message)


def exit_status(exit_message: ExitMessage | None) -> int:
    """The process exit status for a command's exit (see :data:`EXIT_STATUSES`).

    Args:
        exit_message: the command's exit; None when it never came.
    """
    if exit_message is None:
        return EXIT_FAILURE
    if exit_message.timed_out:
        return EXIT_COMMAND_TIMEOUT
    return EXIT_OK if exit_message.code == 0 else EXIT_COMMAND_FAILED


def _fields(message: BaseModel) -> dict[str, object]:
    data: dict[str, object] = message.model_dump(mode="json", exclude={"type", "initial"})
    return data
