"""The agent's Prometheus metrics and its ``/metrics`` answer.

:class:`AgentMetrics` is an observer (see :mod:`session_runtime.agent.observe`)
that owns one ``CollectorRegistry`` (never the process-global one, so tests
and embedders can hold several). ``/metrics`` is answered before the
WebSocket upgrade, unauthenticated like ``/healthz`` and not counted as
activity: a scrape every 15 s must not keep an idle session alive. Every
metric is listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Literal, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from websockets.datastructures import Headers
from websockets.http11 import Response

from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.protocol import GamMode

__all__ = [
    "COMMAND_DURATION_BUCKETS",
    "METRIC_PREFIX",
    "AgentMetrics",
    "CommandResult",
    "command_result",
    "metrics_response",
]

METRIC_PREFIX = "gamgui_agent"
#: Seconds: GAM answers in tens of ms warm, a whole-domain report takes an hour.
COMMAND_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

CommandResult = Literal["ok", "error", "cancelled", "timed_out"]


def command_result(outcome: RunOutcome) -> CommandResult:
    """Classify how a command ended; a detached command was cancelled by the agent.

    Args:
        outcome: the run's outcome.
    """
    if outcome.timed_out:
        return "timed_out"
    if outcome.cancelled or outcome.detached:
        return "cancelled"
    return "ok" if outcome.code == 0 else "error"


class AgentMetrics:
    """The counters, gauges and histograms of one agent, fed as an observer.

    Args:
        registry: where the metrics live; a new registry when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        p = METRIC_PREFIX
        self.started_at = time.time()
        self.commands_started = Counter(
            f"{p}_commands_started", "GAM commands started.", registry=reg
        )
        self.commands_finished = Counter(
            f"{p}_commands_finished",
            "GAM commands finished, by result (ok, error, cancelled, timed_out).",
            ["result"],
            registry=reg,
        )
        self.command_duration = Histogram(
            f"{p}_command_duration_seconds",
            "Wall time of finished GAM commands.",
            buckets=COMMAND_DURATION_BUCKETS,
            registry=reg,
        )
        self.output_bytes = Counter(
            f"{p}_output_bytes", "UTF-8 bytes of command output sent to clients.", registry=reg
        )
        self.runs = Counter(
            f"{p}_gam_runs",
            "Finished commands by how GAM was started (warm: forked, cold: exec).",
            ["mode"],
            registry=reg,
        )
        self.connections_open = Gauge(
            f"{p}_connections_open", "WebSocket connections open now.", registry=reg
        )
        self.connections = Counter(
            f"{p}_connections", "WebSocket connections accepted.", registry=reg
        )
        self.rejections = Counter(
            f"{p}_handshakes_rejected",
            "Handshakes refused before the upgrade, by reason (path, token, connections).",
            ["reason"],
            registry=reg,
        )
        self.attaches = Counter(f"{p}_attaches", "Attaches to a command.", registry=reg)
        self.cancels = Counter(
            f"{p}_cancels",
            "Requests to stop a command, by reason (cancelled, timed_out, detached, shutdown).",
            ["reason"],
            registry=reg,
        )
        self.uptime = Gauge(f"{p}_uptime_seconds", "Seconds since the agent started.", registry=reg)
        self.uptime.set_function(lambda: time.time() - self.started_at)
        for result in get_args(CommandResult):
            self.commands_finished.labels(result=result)
        for mode in get_args(GamMode):
            self.runs.labels(mode=mode)

    def connected(self, client: ClientInfo) -> None:
        """Count an accepted connection."""
        self.connections.inc()
        self.connections_open.inc()

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        """Count a connection's end."""
        self.connections_open.dec()

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        """Count a refused handshake."""
        self.rejections.labels(reason=reason).inc()

    def command_started(self, command: CommandInfo) -> None:
        """Count a started command."""
        self.commands_started.inc()

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        """Count a finished command, its duration, output and GAM mode."""
        self.commands_finished.labels(result=command_result(outcome)).inc()
        self.command_duration.observe(outcome.duration_ms / 1000)
        self.output_bytes.inc(bytes_out)
        self.runs.labels(mode=outcome.gam_mode).inc()

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        """Count an attach."""
        self.attaches.inc()

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        """Count a stop request."""
        self.cancels.labels(reason=reason).inc()


def metrics_response(registry: CollectorRegistry) -> Response:
    """Return the HTTP answer to ``GET /metrics``: the Prometheus text format.

    Args:
        registry: the registry to expose.
    """
    body = generate_latest(registry)
    headers = Headers(
        [
            ("Content-Type", CONTENT_TYPE_LATEST),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)
