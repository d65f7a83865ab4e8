"""The audit record: one JSON object per line, the same shape from the agent and the runtime.

Every line has ``event: "audit"``, an ``action`` (``command``, ``attach``,
``cancel``, ``connect``, ``disconnect``, ``reject``, ``reap``), the
``session_id`` and ``ts`` (unix seconds); the rest depends on the action and
is documented in docs/operations.md ("Audit"). Callers pass argv already
redacted (:mod:`session_runtime.redact`) and never command output.

:class:`AuditWriter` writes lines to a stream (stdout: a cluster's log
collector reads it) and, when configured, appends them to a file (the local
stack's ``SESSION_AUDIT_FILE``). Writing never raises: an audit sink that
fails must not stop a GAM command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = [
    "AUDIT_EVENT",
    "AUDIT_LOGGER",
    "AuditWriter",
    "audit_record",
    "encode_record",
    "log_audit",
    "stream_audit_lines",
]

AUDIT_EVENT = "audit"
#: The logger the runtime (not the agent) sends its audit lines to, e.g. reaps.
AUDIT_LOGGER = "session_runtime.audit"
_FILE_MODE = 0o600


def audit_record(action: str, session_id: str, **fields: object) -> dict[str, object]:
    """Return one audit record; ``None`` fields are kept (a stable set of keys per action).

    Args:
        action: what happened (``command``, ``connect`` ...).
        session_id: the session it happened in.
        **fields: the action's fields, JSON-ready.
    """
    record: dict[str, object] = {"event": AUDIT_EVENT, "action": action, "session_id": session_id}
    record.update(fields)
    record["ts"] = round(time.time(), 3)
    return record


def encode_record(record: dict[str, object]) -> str:
    """Return ``record`` as one line of JSON (no newline inside, whatever the values)."""
    return json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))


def log_audit(action: str, session_id: str, **fields: object) -> None:
    """Send one runtime audit line to the :data:`AUDIT_LOGGER` logger (level INFO).

    Args:
        action: what happened.
        session_id: the session it happened to.
        **fields: the action's fields.
    """
    logging.getLogger(AUDIT_LOGGER).info(encode_record(audit_record(action, session_id, **fields)))


@contextlib.contextmanager
def stream_audit_lines(stream: TextIO) -> Iterator[None]:
    """Within the block, write the runtime's audit lines to ``stream``, one JSON line each.

    For processes that configure no logging of their own: the CLI and the reaper
    CronJob send them to stderr, so ``--json`` output on stdout stays one document.
    A server that embeds the runtime routes :data:`AUDIT_LOGGER` itself instead.

    Args:
        stream: where the lines go.
    """
    logger = logging.getLogger(AUDIT_LOGGER)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


_FD_PATH = re.compile(r"/dev/fd/(\d+)")


class AuditWriter:
    """Writes audit lines to a stream and optionally appends them to a file (mode 0600).

    Args:
        stream: where lines go; the process's stdout when None (looked up at each write,
            so a redirected ``sys.stdout`` is honoured).
        path: a file to append every line to as well; ``/dev/fd/N`` writes to the
            already-open descriptor N (the local stack hands each session's agent
            the shared audit file that way, since its own user may not open it).
    """

    def __init__(self, stream: TextIO | None = None, path: Path | None = None) -> None:
        self._stream = stream
        self.path = path
        self._fd: int | None = None
        self.file_error: str | None = None
        if path is not None:
            inherited = _FD_PATH.fullmatch(str(path))
            try:
                if inherited is not None:
                    self._fd = int(inherited.group(1))
                    os.fstat(self._fd)  # EBADF when nothing was handed over
                    os.set_inheritable(self._fd, False)  # never GAM's
                else:
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
            except OSError as exc:
                self._fd = None
                self.file_error = f"{path}: {exc.strerror}"

    def write(self, record: dict[str, object]) -> None:
        """Write one record as a line, to the stream and the file."""
        line = encode_record(record) + "\n"
        stream = self._stream or sys.stdout
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # a closed stdout must never stop the agent
            pass
        if self._fd is not None:
            try:
                # One write per line with O_APPEND: lines never interleave.
                os.write(self._fd, line.encode())
            except OSError as exc:
                self.file_error = f"{self.path}: {exc.strerror}"

    def close(self) -> None:
        """Close the file, if any."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
