"""What the agent's conversation core reports as it happens, for audit lines and metrics.

The session and the server call an :class:`AgentObserver` at each event; the
observer turns them into audit JSON lines and Prometheus metrics. Keeping the
calls behind one interface means the core has no idea how events are
recorded, and tests can collect them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from session_runtime.agent.runner import RunOutcome

__all__ = ["AgentObserver", "ClientInfo", "CommandInfo", "NullObserver"]


@dataclass(frozen=True)
class ClientInfo:
    """One WebSocket connection: its id, the client address and the user the server named.

    ``client`` is the address the proxy saw (``X-Real-IP``), else the TCP peer;
    ``forwarded_for`` is what ``X-Forwarded-For`` claimed; ``user`` is the
    ``X-Gamgui-User`` header when the server set one (see ``clients``).
    """

    connection_id: str
    client: str
    user: str | None = None
    forwarded_for: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommandInfo:
    """One command as started: ``argv`` is GAM's arguments, unredacted (observers redact)."""

    command_id: str
    argv: tuple[str, ...]
    initial: bool = False
    tty: bool = False
    stdin: bool = False
    #: The connection that started it; None for the initial command.
    started_by: ClientInfo | None = None


class AgentObserver(Protocol):
    """Receives the agent's events; every method must return quickly and never raise."""

    def connected(self, client: ClientInfo) -> None:
        """A WebSocket connection was accepted."""

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        """A connection ended."""

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        """A handshake from ``client`` was refused (``reason``: path, token, connections ...)."""

    def command_started(self, command: CommandInfo) -> None:
        """A command's process started."""

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        """A command ended; ``bytes_out`` counts its output's UTF-8 bytes."""

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        """A client attached to a command."""

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        """A command is being stopped (``reason``: cancelled, timed_out, detached, shutdown)."""


class NullObserver:
    """An observer that records nothing."""

    def connected(self, client: ClientInfo) -> None:
        """Ignore."""

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        """Ignore."""

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        """Ignore."""

    def command_started(self, command: CommandInfo) -> None:
        """Ignore."""

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        """Ignore."""

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        """Ignore."""

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        """Ignore."""
