"""The runtime's Prometheus registry: sessions, creates, limit refusals, reaps, retries.

A :class:`~session_runtime.manager.SessionManager` and an
:class:`~session_runtime.amanager.AsyncSessionManager` each own one
:class:`RuntimeMetrics`; the gamgui server mounts its ``registry`` (for
example ``prometheus_client.make_asgi_app(manager.metrics.registry)``) and
``gamgui-session metrics`` prints a snapshot. For the sync manager, sessions by
status are read from the backend's list at each scrape (the cluster is the
database: any replica reports the same numbers). A scrape cannot await, so the
asyncio manager reports its last list (:class:`LastListed`). The counters and
the histogram count what this process did. Every metric is listed in
docs/operations.md ("Metrics").
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from session_runtime.errors import (
    BackendUnavailableError,
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
    from session_runtime.models import BackendSession

__all__ = [
    "CREATE_DURATION_BUCKETS",
    "METRIC_PREFIX",
    "LastListed",
    "ListedSessions",
    "RuntimeMetrics",
    "create_result",
    "timed_acreate",
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


class ListedSessions(Protocol):
    """What sessions by status are read from: a sync backend, or :class:`LastListed`."""

    name: str

    def list(self) -> list[BackendSession]:
        """Return every session; raise SessionError when they cannot be read."""
        ...


class LastListed:
    """The sessions an asyncio manager last listed, for a scrape that cannot await.

    Args:
        name: the backend's name (the ``backend`` label).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._sessions: list[BackendSession] | None = None

    def update(self, sessions: Iterable[BackendSession]) -> None:
        """Keep what the backend just returned."""
        self._sessions = list(sessions)

    def list(self) -> list[BackendSession]:
        """Return the last list.

        Raises:
            BackendUnavailableError: nothing was listed yet (the scrape says list_up 0).
        """
        if self._sessions is None:
            raise BackendUnavailableError("no list of sessions read yet")
        return list(self._sessions)


class _SessionsCollector(Collector):
    """Sessions by status, from the backend's list at scrape time."""

    def __init__(self, backend: ListedSessions) -> None:
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
    """The metrics one session manager records.

    Args:
        backend: what sessions are listed from (its ``name`` is the ``backend`` label).
        registry: where the metrics live; a new registry when None.
    """

    def __init__(self, backend: ListedSessions, registry: CollectorRegistry | None = None) -> None:
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


@contextlib.contextmanager
def _observed(metrics: RuntimeMetrics) -> Iterator[None]:
    """Record the create the block runs: its duration and result (the error is re-raised)."""
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        metrics.created(time.monotonic() - started, exc)
        raise
    metrics.created(time.monotonic() - started, None)


def timed_create(
    method: Callable[Concatenate[_Self, _P], _R],
) -> Callable[Concatenate[_Self, _P], _R]:
    """Decorate a create method so each call lands in ``self.metrics`` (duration, result).

    Args:
        method: the method to time; its exception, if any, is re-raised unchanged.
    """

    @functools.wraps(method)
    def timed(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _observed(self.metrics):
            return method(self, *args, **kwargs)

    return timed


def timed_acreate(
    method: Callable[Concatenate[_Self, _P], Awaitable[_R]],
) -> Callable[Concatenate[_Self, _P], Coroutine[Any, Any, _R]]:
    """:func:`timed_create` for a coroutine method (the asyncio manager's)."""

    @functools.wraps(method)
    async def timed(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _observed(self.metrics):
            return await method(self, *args, **kwargs)

    return timed
