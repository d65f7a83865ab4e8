"""SessionManager: the server's whole runtime API over a backend.

The manager owns nothing but settings and a backend: every fact about a session
(its token, its status, whether it exists) lives in the backend (the cluster or
the local stack's state directory), so any number of server replicas and CLI
processes share one view. Readiness has two phases: the backend says the agent
is up, then a WebSocket handshake and ping through the proxy proves the whole
path a browser will use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import tenacity

from session_runtime import manager_rules as rules
from session_runtime.errors import (
    SessionError,
    SessionUnauthorizedError,
)
from session_runtime.ids import validate_session_id
from session_runtime.manager_rules import HANDSHAKE_BACKOFF, HANDSHAKE_RETRY_WINDOW_S
from session_runtime.metrics import RuntimeMetrics, timed_create
from session_runtime.models import (
    BackendSession,
    CommandResult,
    ProgressCallback,
    ReapedSession,
    SessionInfo,
    SessionStatus,
)
from session_runtime.settings import WebSocketSettings, load_settings

if TYPE_CHECKING:
    from session_runtime.backends.base import SessionBackend
    from session_runtime.client import SessionConnection

__all__ = [
    "HANDSHAKE_BACKOFF",
    "HANDSHAKE_RETRY_WINDOW_S",
    "Connector",
    "SessionManager",
    "local_stack_settings",
]

#: Opens a connection: (url, token, timeout) -> SessionConnection. Swappable for tests.
Connector = Callable[[str, str, float], "SessionConnection"]


def _open_connection(url: str, token: str, timeout: float) -> SessionConnection:
    from session_runtime.client import SessionConnection  # noqa: PLC0415 - optional deps

    return SessionConnection.open(url, token, timeout=timeout)


def local_stack_settings(settings: WebSocketSettings) -> WebSocketSettings:
    """Return ``settings`` with the running local stack's URLs (see ``LocalBackend.endpoints``).

    Args:
        settings: settings whose ``backend`` is ``local``.
    """
    from session_runtime.backends.local import LocalBackend  # noqa: PLC0415 - local only

    return LocalBackend(settings.local_state_dir).endpoints(settings)


class SessionManager:
    """Create, use, list, close and reap sessions through one backend.

    Args:
        settings: the validated WEBSOCKET_* settings.
        backend: where sessions live (``backends.get_backend(settings)``).
        connector: how to open a WebSocket connection; tests swap it.
        preflight: raises when the backend's infrastructure is known to be down
            (:meth:`from_settings` passes ``backend.preflight``; default: none).
        metrics: where creates, retries and reaps are counted (``metrics.registry`` is
            what a server mounts); a fresh registry when None.
    """

    def __init__(
        self,
        settings: WebSocketSettings,
        backend: SessionBackend,
        *,
        connector: Connector | None = None,
        preflight: Callable[[], None] | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics or RuntimeMetrics(backend)
        self.connector: Connector = connector or _open_connection
        self._preflight = preflight

    @classmethod
    def from_settings(cls, settings: WebSocketSettings | None = None) -> SessionManager:
        """Build a manager from settings (default: the environment and ``.env``).

        URLs the backend knows better are taken from it (``backend.endpoints``:
        the running local stack's proxy, for one).

        Args:
            settings: already-loaded settings; loaded with :func:`load_settings` when None.

        Raises:
            SettingsError: a WEBSOCKET_* variable is invalid.
            BackendUnavailableError: the backend's client library is missing.
        """
        from session_runtime.backends import get_backend  # noqa: PLC0415 - avoids a cycle

        settings = settings or load_settings()
        backend = get_backend(settings)
        return cls(backend.endpoints(settings), backend, preflight=backend.preflight)

    # --- helpers -------------------------------------------------------------
    def _check_enabled(self) -> None:
        rules.check_enabled(self.settings)

    def preflight(self) -> None:
        """Fail fast when the backend's infrastructure is known to be down.

        Asks the backend (``SessionBackend.preflight``): the local stack must be
        running; a cluster's health shows in the calls themselves.

        Raises:
            BackendUnavailableError: with what to start.
        """
        if self._preflight is not None:
            self._preflight()

    def _info(self, session: BackendSession) -> SessionInfo:
        return rules.session_info(self.settings, session)

    def _require(self, session_id: str) -> BackendSession:
        sid = validate_session_id(session_id)
        session = self.backend.get(sid)
        if session is None:
            raise rules.not_found(sid)
        return session

    # --- public API ----------------------------------------------------------
    @timed_create
    def create_session(
        self,
        session_id: str | None = None,
        command: str | None = None,
        credentials_secret: str | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
    ) -> SessionInfo:
        """Start a session (or return the existing one) and wait until it answers.

        Args:
            session_id: the id; a fresh one is generated when None.
            command: a GAM command the session runs first (optional).
            credentials_secret: the Secret with GAM credentials (default from settings).
            wait: when False, return as soon as the backend accepted the session.
            progress: called with each step of the wait.

        Raises:
            SessionsDisabledError: WEBSOCKET_ENABLED is false.
            InvalidSessionIdError: the id breaks the id rule.
            SessionLimitError: WEBSOCKET_MAX_SESSIONS sessions already exist.
            SessionStartError: the session failed or did not start in time.
            SessionJoinError: the agent refused the handshake.
            SessionConnectError: the proxy or agent could not be reached.
        """
        self._check_enabled()
        request = rules.create_request(self.settings, session_id, command, credentials_secret)
        sid = request.session_id
        session = self.backend.create(request, progress)
        created = session.created
        if not wait:
            return self._info(session)
        deadline = time.monotonic() + self.settings.start_timeout
        try:
            session = self.backend.wait_ready(sid, self.settings.start_timeout, progress)
            remaining = max(deadline - time.monotonic(), 1.0)
            self._handshake(session, min(remaining, HANDSHAKE_RETRY_WINDOW_S), progress)
        except SessionError:
            if created:  # free the slot; the original error is the one to report
                with contextlib.suppress(SessionError):
                    self.backend.delete(sid)
            raise
        return self._info(session).model_copy(update={"status": SessionStatus.READY})

    def _handshake(
        self, session: BackendSession, window: float, progress: ProgressCallback | None
    ) -> None:
        """Phase two: handshake and ping through the proxy, retried while DNS catches up."""
        url = self.settings.session_url(session.session_id)
        token = session.token.get_secret_value()

        def announce(state: tenacity.RetryCallState) -> None:
            self.metrics.handshake_retried()
            if progress is not None and state.attempt_number == 1:
                progress(rules.handshake_progress(session.session_id))

        retrying = HANDSHAKE_BACKOFF.retrying(
            f"handshake with session {session.session_id}",
            rules.worth_another_handshake,
            within=window,
            before_sleep=announce,
        )
        try:
            for attempt in retrying:
                with attempt, self.connector(url, token, self.settings.connect_timeout) as conn:
                    conn.ping(timeout=self.settings.connect_timeout)
        except SessionUnauthorizedError as exc:
            raise rules.own_token_refused(exc) from exc
        except rules.RETRIED_HANDSHAKE_ERRORS as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise rules.handshake_failed(tries, exc) from exc
        if progress is not None:
            progress(rules.ready_progress(session.session_id))

    def connect(self, session_id: str) -> SessionConnection:
        """Open a WebSocket connection to a session through the proxy.

        Args:
            session_id: the session to join.

        Raises:
            SessionsDisabledError, SessionNotFoundError, SessionJoinError, SessionConnectError.
        """
        self._check_enabled()
        self.preflight()
        session = self._require(session_id)
        return self.connector(
            self.settings.session_url(session.session_id),
            session.token.get_secret_value(),
            self.settings.connect_timeout,
        )

    def send_command(self, session_id: str, command: str) -> CommandResult:
        """Run one command in a session and return its complete result.

        Args:
            session_id: the session to run it in.
            command: a GAM command line (a leading ``gam`` is optional).

        Raises:
            SessionsDisabledError, SessionNotFoundError, SessionJoinError,
            SessionConnectError, CommandTimeoutError.
        """
        self._check_enabled()
        with self.connect(session_id) as conn:
            return conn.run(command, timeout=self.settings.command_timeout)

    def close_session(self, session_id: str) -> bool:
        """Remove a session and all it owns; True when something was removed.

        Args:
            session_id: the session to close (closing a missing one returns False).
        """
        self._check_enabled()
        return self.backend.delete(validate_session_id(session_id))

    def get_session(self, session_id: str) -> SessionInfo:
        """Return one session.

        Args:
            session_id: the session to look up.

        Raises:
            SessionNotFoundError: no such session.
        """
        self._check_enabled()
        return self._info(self._require(session_id))

    def list_sessions(self) -> list[SessionInfo]:
        """Return every session, oldest first."""
        self._check_enabled()
        return [self._info(s) for s in self.backend.list()]

    def reap(self, *, dry_run: bool = False) -> list[ReapedSession]:
        """Remove finished, expired, idle and orphaned sessions.

        Args:
            dry_run: report what would be removed, remove nothing.
        """
        self._check_enabled()
        reaped = self.backend.reap(
            idle_timeout=self.settings.idle_timeout,
            max_lifetime=self.settings.max_lifetime,
            now=datetime.now(UTC),
            dry_run=dry_run,
        )
        rules.record_reaped(self.metrics, reaped)
        return reaped
