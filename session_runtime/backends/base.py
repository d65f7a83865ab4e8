"""The interface every backend implements: the manager's only view of where sessions live.

The contract, per verb and per state of the session (``absent``, ``pending``/
``starting``, ``ready``, ``terminating``, ``finished``, ``failed``), is the same on
every backend and pinned by ``tests/contract`` (fake, local, Kubernetes):

=============  ==========================================================================
verb           behaviour
=============  ==========================================================================
create         absent: start it (``created=True``). pending/starting/ready: return it
               unchanged (``created=False``). terminating: wait until gone, then start.
               finished/failed: replace it (delete, wait until gone, start) — a dead
               session is never returned, so a create that does not wait (``--no-wait``)
               never hands out an unusable one. The limit counts live sessions only
               (pending, starting, ready); the default session is never counted.
wait_ready     ready: return it. pending/starting: wait. finished/failed: raise
               SessionStartError with the reason. absent: SessionNotFoundError.
get            the session in whatever state (with its token), or None when absent.
list           every session, oldest first (``created_at``), ties by id.
delete         removes the session and all it owns, whatever its state; True when
               something was removed, False when absent (idempotent, never an error).
reap           removes finished, failed, expired and idle sessions; never the default
               session unless it is dead.
=============  ==========================================================================

Besides the verbs, a backend answers three questions callers must not answer by
looking at its type: :meth:`~SessionBackend.endpoints` (the URLs sessions are
reached at), :meth:`~SessionBackend.preflight` (is its infrastructure up) and
:meth:`~SessionBackend.diagnostics` (doctor's checks). Every method is
synchronous and blocking; an asyncio twin mirrors each one with ``async def``.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ReapedSession,
)

if TYPE_CHECKING:
    from session_runtime.settings import WebSocketSettings

__all__ = ["CheckResult", "Diagnostic", "SessionBackend"]

#: (ok, detail, hint): ok is None for "could not be checked" (a skip, not a failure).
CheckResult = tuple[bool | None, str, str | None]


@dataclass(frozen=True)
class Diagnostic:
    """One of doctor's checks that only the backend knows how to make.

    Args:
        name: the checklist line's name (``api``, ``rbac``, ``local-stack`` ...).
        run: makes the check; may raise a ``SessionError`` (reported as a failure).
        gate: when this check fails, the backend's later checks are skipped.
    """

    name: str
    run: Callable[[], CheckResult]
    gate: bool = False


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

        Enforces ``request.max_sessions`` atomically across processes. A finished
        or failed session of that id is replaced; a terminating one is waited out
        (see the contract above). ``created`` on the result says whether this call
        started it. ``request.token`` is a fresh random token a backend may use; one
        that derives tokens itself (Kubernetes) returns its own in the result.

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
        """Return every session, oldest first (ties by id)."""

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

    # --- what callers would otherwise ask by looking at the backend's type --------
    def endpoints(self, settings: WebSocketSettings) -> WebSocketSettings:
        """Return ``settings`` with the URLs sessions are reached at filled in.

        The default keeps them (a cluster's proxy URL is configuration); the local
        stack's proxy listens on a port chosen when it started.
        """
        return settings

    def preflight(self) -> None:
        """Fail fast when the backend's infrastructure is known to be down.

        The default does nothing (a cluster's health shows in the calls themselves).

        Raises:
            BackendUnavailableError: with what to start.
        """
        return None

    def diagnostics(self, settings: WebSocketSettings) -> builtins.list[Diagnostic]:
        """Return doctor's checks of this backend's infrastructure, in order (default: none)."""
        return []
