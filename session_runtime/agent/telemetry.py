"""The agent's real observer: audit lines and metrics behind the one observer interface.

:class:`Telemetry` forwards every event to the audit trail and the metrics
and keeps the one registry ``/metrics`` serves. An observer that raises is
a bug, but it must not cost a GAM command or a connection, so each call is
guarded and the failure logged once per kind.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from session_runtime.agent.audit import AuditObserver
from session_runtime.agent.config import AgentConfig
from session_runtime.agent.log import log_event
from session_runtime.agent.metrics import AgentMetrics
from session_runtime.agent.observe import AgentObserver, ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.audit import AuditWriter

__all__ = ["Telemetry", "build_telemetry"]


class Telemetry:
    """Fans each event out to several observers; one failing never stops the others.

    Args:
        observers: the observers, called in order.
        registry: the metrics registry ``/metrics`` serves.
    """

    def __init__(self, observers: list[AgentObserver], registry: CollectorRegistry) -> None:
        self.observers = observers
        self.registry = registry
        self._failed: set[str] = set()

    def _each(self, name: str, call: Callable[[AgentObserver], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception as exc:  # an observer must never break the agent
                key = f"{type(observer).__name__}.{name}"
                if key not in self._failed:
                    self._failed.add(key)
                    log_event("observer_failed", level="error", observer=key, error=repr(exc))

    def connected(self, client: ClientInfo) -> None:
        """Forward to every observer."""
        self._each("connected", lambda o: o.connected(client))

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        """Forward to every observer."""
        self._each("disconnected", lambda o: o.disconnected(client, close_code))

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        """Forward to every observer."""
        self._each("rejected", lambda o: o.rejected(client, status, reason))

    def command_started(self, command: CommandInfo) -> None:
        """Forward to every observer."""
        self._each("command_started", lambda o: o.command_started(command))

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        """Forward to every observer."""
        self._each("command_finished", lambda o: o.command_finished(command, outcome, bytes_out))

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        """Forward to every observer."""
        self._each("attached", lambda o: o.attached(client, command_id, after_seq))

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        """Forward to every observer."""
        self._each("cancel_requested", lambda o: o.cancel_requested(client, command_id, reason))


def build_telemetry(config: AgentConfig) -> Telemetry:
    """Return the observer an agent runs with: audit lines (stdout, the file) and metrics.

    Args:
        config: the agent configuration (session id, audit file).
    """
    writer = AuditWriter(path=config.audit_file)
    if writer.file_error is not None:
        log_event("audit_file_unavailable", level="error", message=writer.file_error)
    metrics = AgentMetrics()
    return Telemetry([AuditObserver(config.session_id, writer), metrics], metrics.registry)
