"""What every command shares: argument types, output, errors, progress, the manager.

Output rules: data goes to stdout (JSON with ``--json``), progress and errors
in text mode to stderr, and a token is printed only where a command is asked
for it explicitly (``create --show-token``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import IO, TextIO

from session_runtime.errors import InvalidSessionIdError, SessionError
from session_runtime.ids import DEFAULT_SESSION_ID, validate_session_id
from session_runtime.manager import SessionManager
from session_runtime.models import ProgressEvent

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "ProgressPrinter",
    "add_default_session_id",
    "add_json_flag",
    "command_exit_status",
    "emit_json",
    "make_manager",
    "print_error",
    "session_id_arg",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: What a shell reports for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: A command's entry point: parsed arguments in, exit status out.
Handler = Callable[[argparse.Namespace], int]

#: Waits shorter than this show no progress at all.
PROGRESS_AFTER_S = 0.5


def session_id_arg(value: str) -> str:
    """argparse ``type=`` for ``--id``: a bad id is a usage error (exit 2).

    Args:
        value: the raw command-line value.
    """
    try:
        return validate_session_id(value)
    except InvalidSessionIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_default_session_id(parser: argparse.ArgumentParser) -> None:
    """Add ``--id`` for a command that acts on the default session unless told otherwise.

    Args:
        parser: the command's parser.
    """
    parser.add_argument(
        "--id",
        dest="session_id",
        type=session_id_arg,
        default=DEFAULT_SESSION_ID,
        help=f"the session id (default: {DEFAULT_SESSION_ID})",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (machine-readable output on stdout) to a command.

    Args:
        parser: the command's parser.
    """
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def emit_json(data: object, stream: TextIO | None = None) -> None:
    """Print one JSON document (sorted keys, one line) and flush.

    Args:
        data: JSON-ready data (never a token unless explicitly requested).
        stream: where to print (stdout by default).
    """
    out = stream or sys.stdout
    out.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    out.flush()


def print_error(exc: SessionError, *, as_json: bool) -> None:
    """Report an error: one line with cause and hint on stderr, or JSON on stdout.

    Args:
        exc: the error (its text never contains a token).
        as_json: print ``exc.to_dict()`` as JSON on stdout instead.
    """
    if as_json:
        emit_json(exc.to_dict())
    else:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()


def command_exit_status(code: int) -> int:
    """Map a command's exit code to a process exit status (0-255).

    A negative code (killed by signal N) becomes 128 + N, as shells report it.

    Args:
        code: the exit code the agent reported.
    """
    if code < 0:
        return min(128 - code, 255)
    return min(code, 255)


def make_manager() -> SessionManager:
    """Build the manager from the environment (settings errors surface as SettingsError)."""
    return SessionManager.from_settings()


class ProgressPrinter:
    """A progress callback that prints steps on stderr once a wait lasts more than a moment.

    Events from the first half second are held back and printed only if the
    wait goes on, so quick operations stay silent.

    Args:
        stream: where to print (stderr by default).
        after_s: how long a wait lasts before anything is shown.
    """

    def __init__(self, stream: IO[str] | None = None, after_s: float = PROGRESS_AFTER_S) -> None:
        self._stream = stream or sys.stderr
        self._start = time.monotonic()
        self._after_s = after_s
        self._held: list[ProgressEvent] = []
        self._showing = False

    def __call__(self, event: ProgressEvent) -> None:
        """Record (and maybe print) one progress event."""
        self._held.append(event)
        if not self._showing and time.monotonic() - self._start >= self._after_s:
            self._showing = True
        if self._showing:
            for held in self._held:
                self._stream.write(f"... {held.session_id}: {held.message}\n")
            self._held.clear()
            self._stream.flush()

    def note(self, session_id: str, message: str) -> None:
        """Record a progress line that does not come from the backend.

        Args:
            session_id: what the line is about.
            message: the text (never a token).
        """
        self(ProgressEvent(session_id=session_id, phase="note", message=message))
