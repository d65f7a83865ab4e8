"""What both managers decide, without any I/O.

:class:`~session_runtime.manager.SessionManager` (sync) and
:class:`~session_runtime.amanager.AsyncSessionManager` (asyncio) differ only in
how they wait; every decision is made here once: the enabled switch, input
validation and the create request (limits, token), the session info handed to
servers, the not-found error, the handshake retry policy and how its failures
map to typed errors, what a reap records (metrics, audit), and the progress
events of phase two.
"""

from __future__ import annotations

import secrets

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
from session_runtime.metrics import RuntimeMetrics
from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressEvent,
    ReapedSession,
    SessionInfo,
)
from session_runtime.retry import Backoff
from session_runtime.settings import WebSocketSettings
from session_runtime.spec import validate_dns_subdomain

__all__ = [
    "HANDSHAKE_BACKOFF",
    "HANDSHAKE_RETRY_WINDOW_S",
    "PROXY_HINT",
    "RETRIED_HANDSHAKE_ERRORS",
    "check_enabled",
    "create_request",
    "handshake_failed",
    "handshake_progress",
    "not_found",
    "own_token_refused",
    "ready_progress",
    "record_reaped",
    "session_info",
    "worth_another_handshake",
]

#: How long phase two retries a refused or unreachable handshake (DNS caching, nginx resolver).
HANDSHAKE_RETRY_WINDOW_S = 15.0
#: Phase two's pauses: short at first (DNS usually catches up at once), capped at 1 s.
HANDSHAKE_BACKOFF = Backoff(attempts=1000, base_delay=0.05, max_delay=1.0)
#: Handshake failures worth another try (a refused token is not: see worth_another_handshake).
RETRIED_HANDSHAKE_ERRORS = (SessionConnectError, HandshakeRejectedError, CommandTimeoutError)

PROXY_HINT = (
    "check that the proxy answers (`gamgui-session test-proxy`) and that "
    "WEBSOCKET_SESSION_CONNECTION_TEMPLATE points at it"
)


def check_enabled(settings: WebSocketSettings) -> None:
    """Raise when sessions are switched off.

    Raises:
        SessionsDisabledError: WEBSOCKET_ENABLED is false.
    """
    if not settings.enabled:
        raise SessionsDisabledError()


def create_request(
    settings: WebSocketSettings,
    session_id: str | None,
    command: str | None,
    credentials_secret: str | None,
) -> CreateRequest:
    """Validate a create's inputs and return what the backend needs (a fresh token included).

    Raises:
        InvalidSessionIdError: the id breaks the id rule.
        InvalidNameError: the credentials Secret name is not a DNS subdomain.
    """
    sid = validate_session_id(session_id) if session_id is not None else generate_session_id()
    secret = credentials_secret or settings.default_credentials_secret
    validate_dns_subdomain(secret, "credentials secret name")
    return CreateRequest(
        session_id=sid,
        token=SecretStr(secrets.token_urlsafe(32)),
        command=command,
        credentials_secret=secret,
        max_sessions=settings.max_sessions,
    )


def session_info(settings: WebSocketSettings, session: BackendSession) -> SessionInfo:
    """The session as the server sees it: its URLs through the proxy, token and status."""
    return SessionInfo(
        session_id=session.session_id,
        websocket_url=settings.session_url(session.session_id),
        websocket_path=settings.session_path(session.session_id),
        token=session.token,
        status=session.status,
        created_at=session.created_at,
    )


def not_found(session_id: str) -> SessionNotFoundError:
    """The error for a session the backend does not know."""
    return SessionNotFoundError(
        cause=f"no session {session_id!r} exists",
        hint="list sessions with `gamgui-session list`, or create it first",
    )


def worth_another_handshake(exc: BaseException) -> bool:
    """Refused or unreachable is retried (DNS may lag); a refused token never is."""
    return isinstance(exc, RETRIED_HANDSHAKE_ERRORS) and not isinstance(
        exc, SessionUnauthorizedError
    )


def own_token_refused(exc: SessionUnauthorizedError) -> SessionJoinError:
    """The error when a new session refuses the token it was created with."""
    return SessionJoinError(
        cause=f"the session refused its own token (HTTP {exc.status})",
        hint="another session may answer at this id; close it and create it again",
    )


def handshake_failed(tries: int, exc: SessionError) -> SessionConnectError:
    """The error when phase two gave up."""
    return SessionConnectError(
        cause=f"no handshake through the proxy after {tries} attempts: "
        f"{exc.message}" + (f" ({exc.cause})" if exc.cause else ""),
        hint=PROXY_HINT,
    )


def handshake_progress(session_id: str) -> ProgressEvent:
    """The progress event of a first refused handshake."""
    return ProgressEvent(
        session_id=session_id,
        phase="handshake",
        message="waiting for the proxy to reach the session",
    )


def ready_progress(session_id: str) -> ProgressEvent:
    """The progress event of the end of phase two."""
    return ProgressEvent(
        session_id=session_id, phase="ready", message="session answers through the proxy"
    )


def record_reaped(metrics: RuntimeMetrics, reaped: list[ReapedSession]) -> None:
    """Count a reap's removals and write one audit line per session it reported."""
    metrics.reaped(reaped)
    for r in reaped:
        log_audit("reap", r.session_id, **r.model_dump(mode="json", exclude={"session_id"}))
