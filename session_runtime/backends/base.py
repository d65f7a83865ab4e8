"""The interface every backend implements: the manager's only view of where sessions live."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from datetime import datetime

from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ReapedSession,
)

__all__ = ["SessionBackend"]


class SessionBackend(ABC):
    """Where sessions live: a Kubernetes namespace, or the local stack.

    Every fact about a session is kept by the backend (the cluster, or the
    state directory), never in the process that calls it, so any number of
    callers share one view.
    """

    name: str

    @abstractmethod
    def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Start a session, or return the existing one with that id.

        Enforces ``request.max_sessions`` atomically across processes.

        Raises:
            SessionLimitError: the limit is reached.
            BackendError: the backend refused.
        """

    @abstractmethod
    def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Block until the session's agent is up (phase one of readiness).

        Raises:
            SessionNotFoundError: no such session.
            SessionStartError: it failed, with the reason, or did not start in time.
        """

    @abstractmethod
    def get(self, session_id: str) -> BackendSession | None:
        """Return the session, with its token, or None."""

    @abstractmethod
    def list(self) -> builtins.list[BackendSession]:
        """Return every session, oldest first."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove the session and everything it owns; True if something was removed.

        Idempotent: deleting a missing session is not an error.
        """

    @abstractmethod
    def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove finished, expired, idle and orphaned sessions; return what and why."""
