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
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from session_runtime.audit import log_audit
from session_runtime.errors import (
    CommandTimeoutError,
    HandshakeRejectedError,
    SessionConnectError,
    SessionError,
    SessionJoinError,
    SessionNotFoundError,
    SessionsDisabledError,
    SessionUnauthorizedError,
)
from session_runtime.ids import generate_session_id, validate_session_id
from session_runtime.metrics import RuntimeMetrics, timed_create
from session_runtime.models import (
    BackendSession,
    CommandResult,
    CreateRequest,
    ProgressCallback,
    ProgressEvent,
    ReapedSession,
    SessionInfo,
    SessionStatus,
)
from session_runtime.settings import WebSocketSettings, load_settings
from session_runtime.spec import validate_dns_subdomain

if TYPE_CHECKING:
    from session_runtime.backends.base import SessionBackend
    from session_runtime.client import SessionConnection

__all__ = [
    "HANDSHAKE_RETRY_WINDOW_S",
    "Connector",
    "SessionManager",
    "local_stack_settings",
]

#: How long phase two retries a refused or unreachable handshake (DNS caching, nginx resolver).
HANDSHAKE_RETRY_WINDOW_S = 15.0
_RETRY_FIRST_DELAY_S = 0.05
_RETRY_MAX_DELAY_S = 1.0

#: Opens a connection: (url, token, timeout) -> SessionConnection. Swappable for tests.
Connector = Callable[[str, str, float], "SessionConnection"]

_PROXY_HINT = (
    "check that the proxy answers (`gamgui-session test-proxy`) and that "
    "WEBSOCKET_SESSION_CONNECTION_TEMPLATE points at it"
)


def _open_connection(url: str, token: str, timeout: float) -> SessionConnection:
    from session_runtime.client import SessionConnection  # noqa: PLC0415 - optional deps

    return SessionConnection.open(url, token, timeout=timeout)


def local_stack_settings(settings: WebSocketSettings) -> WebSocketSettings:
    """Point the proxy URL and connection template at the running local stack.

    The local stack's proxy listens on a port chosen when it started, so the
    URLs come from its state directory unless the environment set them
    explicitly (pydantic's ``model_fields_set``). When the stack is not
    running, the settings are returned unchanged.

    Args:
        settings: settings whose ``backend`` is ``local``.
    """
    explicit = settings.model_fields_set
    if {"proxy_service_url", "session_connection_template"} <= explicit:
        return settings
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415 - local only

    proxy_url = LocalStack(Path(settings.local_state_dir)).proxy_url()
    if not proxy_url:
        return settings
    base = proxy_url.rstrip("/")
    ws_base = "ws://" + base.split("://", 1)[1] if "://" in base else f"ws://{base}"
    update: dict[str, object] = {}
    if "proxy_service_url" not in explicit:
        update["proxy_service_url"] = base
    if "session_connection_template" not in explicit:
        update["session_connection_template"] = ws_base + settings.session_path_template
    return settings.model_copy(update=update)


def _local_stack_preflight(settings: WebSocketSettings) -> Callable[[], None]:
    """Return a check that the local stack runs (its URLs cannot be known otherwise)."""
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415 - local only

    stack = LocalStack(Path(settings.local_state_dir))

    def preflight() -> None:
        stack.require_running()

    return preflight


class SessionManager:
    """Create, use, list, close and reap sessions through one backend.

    Args:
        settings: the validated WEBSOCKET_* settings.
        backend: where sessions live (``backends.get_backend(settings)``).
        connector: how to open a WebSocket connection; tests swap it.
        preflight: raises when the backend's infrastructure is known to be down.
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

        With the local backend, URLs not set explicitly are taken from the
        running local stack (see :func:`local_stack_settings`).

        Args:
            settings: already-loaded settings; loaded with :func:`load_settings` when None.

        Raises:
            SettingsError: a WEBSOCKET_* variable is invalid.
            BackendUnavailableError: the backend's client library is missing.
        """
        from session_runtime.backends import get_backend  # noqa: PLC0415 - avoids a cycle

        settings = settings or load_settings()
        preflight = None
        if settings.backend == "local":
            settings = local_stack_settings(settings)
            preflight = _local_stack_preflight(settings)
        return cls(settings, get_backend(settings), preflight=preflight)

    # --- helpers -------------------------------------------------------------
    def _check_enabled(self) -> None:
        if not self.settings.enabled:
            raise SessionsDisabledError()

    def preflight(self) -> None:
        """Fail fast when the backend's infrastructure is known to be down.

        With the local backend: the local stack must be running. Otherwise a no-op
        (a cluster's health shows in the calls themselves).

        Raises:
            BackendUnavailableError: with what to start.
        """
        if self._preflight is not None:
            self._preflight()

    def _info(self, session: BackendSession) -> SessionInfo:
        return SessionInfo(
            session_id=session.session_id,
            websocket_url=self.settings.session_url(session.session_id),
            websocket_path=self.settings.session_path(session.session_id),
            token=session.token,
            status=session.status,
            created_at=session.created_at,
        )

    def _require(self, session_id: str) -> BackendSession:
        sid = validate_session_id(session_id)
        session = self.backend.get(sid)
        if session is None:
            raise SessionNotFoundError(
                cause=f"no session {sid!r} exists",
                hint="list sessions with `gamgui-session list`, or create it first",
            )
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
        sid = validate_session_id(session_id) if session_id is not None else generate_session_id()
        secret = credentials_secret or self.settings.default_credentials_secret
        validate_dns_subdomain(secret, "credentials secret name")
        existed = self.backend.get(sid) is not None
        request = CreateRequest(
            session_id=sid,
            token=SecretStr(secrets.token_urlsafe(32)),
            command=command,
            credentials_secret=secret,
            max_sessions=self.settings.max_sessions,
        )
        session = self.backend.create(request, progress)
        if not wait:
            return self._info(session)
        deadline = time.monotonic() + self.settings.start_timeout
        try:
            session = self.backend.wait_ready(sid, self.settings.start_timeout, progress)
            remaining = max(deadline - time.monotonic(), 1.0)
            self._handshake(session, min(remaining, HANDSHAKE_RETRY_WINDOW_S), progress)
        except SessionError:
            if not existed:  # free the slot; the original error is the one to report
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
        deadline = time.monotonic() + window
        delay = _RETRY_FIRST_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.connector(url, token, self.settings.connect_timeout) as conn:
                    conn.ping(timeout=self.settings.connect_timeout)
            except SessionUnauthorizedError as exc:
                raise SessionJoinError(
                    cause=f"the session refused its own token (HTTP {exc.status})",
                    hint="another session may answer at this id; close it and create it again",
                ) from exc
            except (SessionConnectError, HandshakeRejectedError, CommandTimeoutError) as exc:
                if time.monotonic() + delay >= deadline:
                    raise SessionConnectError(
                        cause=f"no handshake through the proxy after {attempt} attempts: "
                        f"{exc.message}" + (f" ({exc.cause})" if exc.cause else ""),
                        hint=_PROXY_HINT,
                    ) from exc
                if progress is not None and attempt == 1:
                    progress(
                        ProgressEvent(
                            session_id=session.session_id,
                            phase="handshake",
                            message="waiting for the proxy to reach the session",
                        )
                    )
                self.metrics.handshake_retried()
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY_S)
                continue
            if progress is not None:
                progress(
                    ProgressEvent(
                        session_id=session.session_id,
                        phase="ready",
                        message="session answers through the proxy",
                    )
                )
            return

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
        self.metrics.reaped(reaped)
        for r in reaped:
            log_audit("reap", r.session_id, **r.model_dump(mode="json", exclude={"session_id"}))
        return reaped
