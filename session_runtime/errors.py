"""Every error the runtime raises, in one hierarchy.

Each error carries a human ``message``, an optional ``cause`` (what went wrong
underneath, already free of secrets) and a ``hint`` (what to check). The three
classic messages users search for are kept verbatim as the first words of
:class:`SessionsDisabledError`, :class:`SessionJoinError` and
:class:`SessionConnectError`.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CommandRejectedError",
    "CommandTimeoutError",
    "ConnectionLostError",
    "HandshakeRejectedError",
    "InvalidNameError",
    "InvalidSessionIdError",
    "ProtocolError",
    "SessionConnectError",
    "SessionError",
    "SessionJoinError",
    "SessionLimitError",
    "SessionNotFoundError",
    "SessionStartError",
    "SessionUnauthorizedError",
    "SessionUnreachableError",
    "SessionsDisabledError",
    "SettingsError",
]


class SessionError(Exception):
    """Base of every runtime error.

    Args:
        message: what failed, in words a user understands.
        cause: the underlying reason (never a token or credential).
        hint: what to check or do next.
    """

    def __init__(self, message: str, *, cause: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.cause = cause
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.cause:
            text += f": {self.cause}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, str | None]:
        """Return a JSON-ready description, for CLIs and servers."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "cause": self.cause,
            "hint": self.hint,
        }


class SettingsError(SessionError, ValueError):
    """A WEBSOCKET_* setting (or agent environment variable) is missing or invalid.

    Raised at start-up; the message names the variable and what is allowed.
    """


class InvalidSessionIdError(SessionError, ValueError):
    """A session id does not satisfy the rule in :mod:`session_runtime.ids`."""


class InvalidNameError(SessionError, ValueError):
    """A Kubernetes object name given as input (e.g. a credentials Secret) is not valid."""


class SessionsDisabledError(SessionError):
    """WEBSOCKET_ENABLED is false, so no session can be created or joined."""

    def __init__(self, *, cause: str | None = None, hint: str | None = None):
        super().__init__(
            "WebSocket sessions are disabled",
            cause=cause or "WEBSOCKET_ENABLED is false",
            hint=hint or "set WEBSOCKET_ENABLED=true in the server's environment or .env",
        )


class SessionLimitError(SessionError):
    """Creating a session would exceed WEBSOCKET_MAX_SESSIONS (or the cluster quota)."""

    def __init__(self, max_sessions: int, *, cause: str | None = None, hint: str | None = None):
        super().__init__(
            f"Maximum number of sessions ({max_sessions}) reached",
            cause=cause,
            hint=hint or "close idle sessions, run `gamgui-session reap`, or raise max_sessions",
        )
        self.max_sessions = max_sessions


class SessionJoinError(SessionError):
    """Error joining session: it is missing, not ready, failed to start or refused us."""

    def __init__(self, message: str = "Error joining session", **kwargs: str | None):
        if not message.startswith("Error joining session"):
            message = f"Error joining session: {message}"
        super().__init__(message, **kwargs)


class SessionNotFoundError(SessionJoinError):
    """No session with this id exists (in the cluster, or the local stack)."""


class SessionStartError(SessionJoinError):
    """The session's pod or process failed to become ready (image pull, crash, timeout)."""


class HandshakeRejectedError(SessionJoinError):
    """The proxy or agent answered the WebSocket handshake with an HTTP error status.

    ``status`` is the HTTP status; ``code`` the JSON error code from the body when one was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        cause: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, cause=cause, hint=hint)
        self.status = status
        self.code = code


class SessionUnauthorizedError(HandshakeRejectedError):
    """HTTP 401: the token is missing, wrong, or belongs to another session."""


class SessionConnectError(SessionError):
    """Failed to connect to session: the proxy or the agent could not be reached."""

    def __init__(self, message: str = "Failed to connect to session", **kwargs: str | None):
        if not message.startswith("Failed to connect to session"):
            message = f"Failed to connect to session: {message}"
        super().__init__(message, **kwargs)


class SessionUnreachableError(SessionConnectError):
    """The proxy answered 502/503/504: it could not reach the session's agent."""

    def __init__(
        self,
        message: str = "Failed to connect to session",
        *,
        status: int,
        code: str | None = None,
        cause: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, cause=cause, hint=hint)
        self.status = status
        self.code = code


class ConnectionLostError(SessionConnectError):
    """The WebSocket closed (or the agent died) while a command was running."""


class CommandRejectedError(SessionError):
    """The agent refused a command or request; ``code`` is the protocol error code.

    Codes: ``bad_request`` (empty or malformed), ``busy`` (another command runs),
    ``not_allowed``, ``unauthorized``, ``internal``.
    """

    def __init__(
        self, message: str, *, code: str, cause: str | None = None, hint: str | None = None
    ):
        super().__init__(message, cause=cause, hint=hint)
        self.code = code


class CommandTimeoutError(SessionError):
    """A command, or a wait for the agent, did not finish within its timeout."""


class ProtocolError(SessionError):
    """A peer sent a message that does not follow the session protocol."""


class BackendError(SessionError):
    """The backend (Kubernetes API, local stack) refused an operation; ``cause`` has its message."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached, after bounded retries for transient failures."""
