"""JSON-lines logging on stdout, the format log collectors in a cluster expect.

Callers pass named fields; nothing here ever receives a token or credential
content, and :func:`log_event` refuses field names that suggest one.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

__all__ = ["log_event", "set_log_stream"]

_FORBIDDEN_FIELDS = frozenset({"token", "password", "secret", "authorization", "credentials"})
_stream: TextIO = sys.stdout


def set_log_stream(stream: TextIO) -> None:
    """Send log lines to ``stream`` instead of stdout (tests).

    Args:
        stream: a text stream opened for writing.
    """
    global _stream  # noqa: PLW0603 - one process-wide sink, like the logging module
    _stream = stream


def log_event(event: str, *, level: str = "info", **fields: object) -> None:
    """Write one JSON line: ``ts``, ``level``, ``event`` and the given fields.

    Args:
        event: a short snake_case name (``listening``, ``command_started`` ...).
        level: ``debug``, ``info``, ``warning`` or ``error``.
        **fields: JSON-ready values; never a token or credential content.
    """
    bad = _FORBIDDEN_FIELDS.intersection(fields)
    if bad:
        raise ValueError(f"refusing to log secret-looking fields: {sorted(bad)}")
    record: dict[str, object] = {"ts": round(time.time(), 3), "level": level, "event": event}
    record.update(fields)
    try:
        _stream.write(json.dumps(record, default=str) + "\n")
        _stream.flush()
    except (OSError, ValueError):  # a closed stdout must never stop the agent
        pass
