"""The runtime's Prometheus registry: sessions, creates, limit refusals, reaps, retries.

A :class:`~session_runtime.manager.SessionManager` owns one
:class:`RuntimeMetrics`; the gamgui server mounts its ``registry`` (for
example ``prometheus_client.make_wsgi_app(manager.metrics.registry)``) and
``gamgui-session metrics`` prints a snapshot. Sessions by status are read
from the backend's list at each scrape (the cluster is the database: any
replica reports the same numbers); the counters and the histogram count what
this process did. Every metric is listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from session_runtime.errors import (
    InvalidNameError,
    InvalidSessionIdError,
    SessionConnectError,
    SessionError,
    SessionJoinError,
    SessionLimitError,
    SessionsDisabledError,
    SessionStartError,
)
from session_runtime.models import ReapedSession, ReapReason, SessionStatus

if TYPE_CHECKING:
    from session_runtime.backends.base import SessionBackend

__all__ = [
    "CREATE_DURATION_BUCKETS",
    "METRIC_PREFIX",
    "RuntimeMetrics",
    "create_result",
    "timed_create",
]

METRIC_PREFIX = "gamgui"
#: Seconds: a local agent answers in under a second, a cold node pulls an image for minutes.
CREATE_DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


def create_result(error: BaseException | None) -> str:
    """Return the ``result`` label of a create: ``ok`` or why it failed.

    Args:
        error: what the create raised, None when it succeeded.
    """
    if error is None:
        return "ok"
    kinds: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (SessionLimitError, "limit"),
        (SessionsDisabledError, "disabled"),
        ((InvalidSessionIdError, InvalidNameError), "invalid"),
        (SessionStartError, "start_failed"),
        (SessionJoinError, "join_failed"),
        (SessionConnectError, "connect_failed"),
    )
    for kind, result in kinds:
        if isinstance(error, kind):
            return result
    return "error" if isinstance(error, SessionError) else "exception"


class _SessionsCollector(Collector):
    """Sessions by status, from the backend's list at scrape time."""

    def __init__(self, backend: SessionBackend) -> None:
        self._backend = backend

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            f"{METRIC_PREFIX}_sessions_list_up",
            "1 when the backend's list of sessions could be read at this scrape, else 0.",
            labels=["backend"],
        )
        sessions = GaugeMetricFamily(
            f"{METRIC_PREFIX}_sessions",
            "Sessions by status (pending, starting, ready, failed, terminating, finished).",
            labels=["backend", "status"],
        )
        name = self._backend.name
        try:
            listed = self._backend.list()
        except SessionError:
            up.add_metric([name], 0)
            return [up]
        counts = dict.fromkeys(SessionStatus, 0)
        for session in listed:
            counts[session.status] += 1
        for status, count in counts.items():
            sessions.add_metric([name, status.value], count)
        up.add_metric([name], 1)
        return [up, sessions]

    def describe(self) -> Iterable[Metric]:
        """Nothing to describe up front: listing at registration would hit the backend."""
        return []


class RuntimeMetrics:
    """The metrics one :class:`~session_runtime.manager.SessionManager` records.

    Args:
        backend: the backend sessions are listed from (its ``name`` is the ``backend`` label).
        registry: where the metrics live; a new registry when None.
    """

    def __init__(self, backend: SessionBackend, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.backend_name = backend.name
        reg, p = self.registry, METRIC_PREFIX
        reg.register(_SessionsCollector(backend))
        self.create_duration = Histogram(
            f"{p}_session_create_duration_seconds",
            "Wall time of create_session, by backend and result (ok, limit, start_failed ...).",
            ["backend", "result"],
            buckets=CREATE_DURATION_BUCKETS,
            registry=reg,
        )
        self.limit_refusals = Counter(
            f"{p}_session_limit_refusals",
            "Creates refused because WEBSOCKET_MAX_SESSIONS sessions exist.",
            ["backend"],
            registry=reg,
        )
        self.reaps = Counter(
            f"{p}_sessions_reaped",
            "Sessions the reaper removed, by reason (finished, failed, idle, "
            "lifetime_exceeded, orphaned).",
            ["backend", "reason"],
            registry=reg,
        )
        self.handshake_retries = Counter(
            f"{p}_session_handshake_retries",
            "Handshakes through the proxy tried again while DNS and nginx caught up.",
            ["backend"],
            registry=reg,
        )
        self.limit_refusals.labels(backend=self.backend_name)
        self.handshake_retries.labels(backend=self.backend_name)
        for reason in ReapReason:
            self.reaps.labels(backend=self.backend_name, reason=reason.value)

    def created(self, seconds: float, error: BaseException | None) -> None:
        """Record one create_session call: its duration and result.

        Args:
            seconds: how long it took.
            error: what it raised, None when it succeeded.
        """
        result = create_result(error)
        self.create_duration.labels(backend=self.backend_name, result=result).observe(seconds)
        if result == "limit":
            self.limit_refusals.labels(backend=self.backend_name).inc()

    def handshake_retried(self) -> None:
        """Record one more handshake attempt after a failed one."""
        self.handshake_retries.labels(backend=self.backend_name).inc()

    def reaped(self, reaped: Iterable[ReapedSession]) -> None:
        """Count the sessions a reap removed (reported but kept ones, as in a dry run, are not).

        Args:
            reaped: what the backend's reap returned.
        """
        for item in reaped:
            if item.removed:
                self.reaps.labels(backend=self.backend_name, reason=item.reason_code.value).inc()

    def snapshot(self) -> str:
        """Return the registry in the Prometheus text format."""
        return generate_latest(self.registry).decode()


class _HasMetrics(Protocol):
    metrics: RuntimeMetrics


_Self = TypeVar("_Self", bound=_HasMetrics)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def timed_create(
    method: Callable[Concatenate[_Self, _P], _R],
) -> Callable[Concatenate[_Self, _P], _R]:
    """Decorate a create method so each call lands in ``self.metrics`` (duration, result).

    Args:
        method: the method to time; its exception, if any, is re-raised unchanged.
    """

    @functools.wraps(method)
    def timed(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        started = time.monotonic()
        try:
            result = method(self, *args, **kwargs)
        except BaseException as exc:
            self.metrics.created(time.monotonic() - started, exc)
            raise
        self.metrics.created(time.monotonic() - started, None)
        return result

    return timed
