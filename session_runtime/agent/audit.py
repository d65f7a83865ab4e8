"""The agent's audit trail: who ran which GAM command, when, and how it ended.

:class:`AuditObserver` turns the core's events into audit lines
(:mod:`session_runtime.audit`): ``connect``/``disconnect``/``reject`` per
connection, ``command`` with ``phase`` ``started`` and ``finished``, ``attach``
and ``cancel``. argv passes through :func:`session_runtime.redact.redact_argv`
before it is written; output is never seen here, only its byte count.
"""

from __future__ import annotations

from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.audit import AuditWriter, audit_record
from session_runtime.redact import redact_argv

__all__ = ["AuditObserver"]


def _who(client: ClientInfo | None) -> dict[str, object]:
    if client is None:
        return {"connection_id": None, "client": None, "user": None, "forwarded_for": None}
    return {
        "connection_id": client.connection_id,
        "client": client.client,
        "user": client.user,
        "forwarded_for": list(client.forwarded_for) or None,
    }


class AuditObserver:
    """Writes one audit line per event of one session's agent.

    Args:
        session_id: the session every line names.
        writer: where the lines go.
    """

    def __init__(self, session_id: str, writer: AuditWriter) -> None:
        self.session_id = session_id
        self.writer = writer

    def _write(self, action: str, **fields: object) -> None:
        self.writer.write(audit_record(action, self.session_id, **fields))

    def _command(self, phase: str, command: CommandInfo, **fields: object) -> None:
        self._write(
            "command",
            phase=phase,
            command_id=command.command_id,
            **_who(command.started_by),
            argv=redact_argv(command.argv),
            initial=command.initial,
            tty=command.tty,
            stdin=command.stdin,
            **fields,
        )

    def connected(self, client: ClientInfo) -> None:
        """Record an accepted connection."""
        self._write("connect", **_who(client))

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        """Record a connection's end and its close code."""
        self._write("disconnect", **_who(client), close_code=close_code)

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        """Record a refused handshake and who tried (the token, if any, is never seen here)."""
        self._write("reject", **_who(client), status=status, reason=reason)

    def command_started(self, command: CommandInfo) -> None:
        """Record a command's start."""
        self._command("started", command)

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        """Record how a command ended."""
        self._command(
            "finished",
            command,
            exit_code=outcome.code,
            duration_ms=outcome.duration_ms,
            bytes_out=bytes_out,
            cancelled=outcome.cancelled,
            timed_out=outcome.timed_out,
            detached=outcome.detached,
            gam_mode=outcome.gam_mode,
        )

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        """Record a client attaching to a command."""
        self._write("attach", **_who(client), command_id=command_id, after_seq=after_seq)

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        """Record who asked a command to stop, and why."""
        self._write("cancel", **_who(client), command_id=command_id, reason=reason)
