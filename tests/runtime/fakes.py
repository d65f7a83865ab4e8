"""In-memory stand-ins for a backend and a session connection, for tests of pure logic.

They follow the contracts (``SessionBackend``, ``SessionConnection``) closely
enough that the manager, smoke checks and CLI run unchanged on top of them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from session_runtime.backends.base import SessionBackend
from session_runtime.errors import SessionLimitError, SessionNotFoundError, SessionStartError
from session_runtime.models import (
    BackendSession,
    CommandResult,
    CreateRequest,
    ProgressCallback,
    ProgressEvent,
    ReapedSession,
    ReapReason,
    SessionStatus,
)

__all__ = ["FakeBackend", "FakeConnection", "FakeNetwork"]

_ALIVE = (SessionStatus.PENDING, SessionStatus.STARTING, SessionStatus.READY)


class FakeBackend(SessionBackend):
    """Sessions in a dict; ``fail_ready`` makes ``wait_ready`` fail for those ids."""

    name = "fake"

    def __init__(self) -> None:
        self.sessions: dict[str, BackendSession] = {}
        self.fail_ready: set[str] = set()
        self.deleted: builtins.list[str] = []
        self.requests: builtins.list[CreateRequest] = []

    def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        self.requests.append(request)
        existing = self.sessions.get(request.session_id)
        if existing is not None and existing.status in _ALIVE:
            return existing.model_copy(update={"created": False})
        if existing is not None:  # finished or failed (or terminating): replaced
            self.sessions.pop(request.session_id)
        if sum(1 for s in self.sessions.values() if s.status in _ALIVE) >= request.max_sessions:
            raise SessionLimitError(request.max_sessions)
        session = BackendSession(
            session_id=request.session_id,
            token=request.token,
            status=SessionStatus.STARTING,
            created_at=datetime.now(UTC),
            command=request.command,
            credentials_secret=request.credentials_secret,
        )
        self.sessions[request.session_id] = session.model_copy(update={"created": False})
        if progress is not None:
            progress(ProgressEvent(session_id=request.session_id, phase="start", message="go"))
        return session.model_copy(update={"created": True})

    def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        if session_id not in self.sessions:
            raise SessionNotFoundError(cause=f"no session {session_id!r}")
        status = self.sessions[session_id].status
        if status in (SessionStatus.FINISHED, SessionStatus.FAILED):
            raise SessionStartError(cause=f"the session is {status.value}")
        if session_id in self.fail_ready:
            raise SessionStartError(cause="the agent exited with status 3")
        ready = self.sessions[session_id].model_copy(update={"status": SessionStatus.READY})
        self.sessions[session_id] = ready
        return ready

    def get(self, session_id: str) -> BackendSession | None:
        return self.sessions.get(session_id)

    def list(self) -> builtins.list[BackendSession]:
        return sorted(self.sessions.values(), key=lambda s: (s.created_at, s.session_id))

    def delete(self, session_id: str) -> bool:
        self.deleted.append(session_id)
        return self.sessions.pop(session_id, None) is not None

    def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        out = []
        for sid, session in builtins.list(self.sessions.items()):
            if session.status == SessionStatus.FINISHED:
                if not dry_run:
                    del self.sessions[sid]
                out.append(
                    ReapedSession(
                        session_id=sid,
                        reason="finished",
                        reason_code=ReapReason.FINISHED,
                        removed=not dry_run,
                    )
                )
        return out


@dataclass
class FakeConnection:
    """A connection whose commands answer from ``results`` (default: exit 0, 'ok')."""

    url: str
    token: str
    results: dict[str, CommandResult] = field(default_factory=dict)
    closed: bool = False
    pings: int = 0

    def ping(self, timeout: float = 5.0) -> float:
        self.pings += 1
        return 0.001

    def run(self, command: str | Sequence[str], *, timeout: float | None = None) -> CommandResult:
        key = command if isinstance(command, str) else " ".join(command)
        return self.results.get(
            key, CommandResult(exit_code=0, stdout="ok\n", stderr="", duration_ms=1)
        )

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class FakeNetwork:
    """A connector: ``failures`` raises the given errors first, in order, then connects."""

    failures: builtins.list[Exception] = field(default_factory=builtins.list)
    results: dict[str, CommandResult] = field(default_factory=dict)
    opened: builtins.list[FakeConnection] = field(default_factory=builtins.list)
    refuse: Callable[[str, str], Exception | None] | None = None

    def __call__(self, url: str, token: str, timeout: float) -> FakeConnection:
        if self.refuse is not None:
            error = self.refuse(url, token)
            if error is not None:
                raise error
        if self.failures:
            raise self.failures.pop(0)
        conn = FakeConnection(url, token, results=self.results)
        self.opened.append(conn)
        return conn
