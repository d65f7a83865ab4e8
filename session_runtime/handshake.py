"""What both client shells decide about opening a connection, without any I/O.

How the token travels, which typed error an HTTP refusal or a socket failure
becomes, how a close frame reads, and the retry policy for reconnects.
:mod:`session_runtime.client` (websocket-client) and
:mod:`session_runtime.aclient` (websockets asyncio) call these, so the same
failure gives the same error, message and hint in both.
"""

from __future__ import annotations

import json

from session_runtime import naming
from session_runtime.errors import (
    HandshakeRejectedError,
    SessionConnectError,
    SessionUnauthorizedError,
    SessionUnreachableError,
)
from session_runtime.retry import Backoff

__all__ = [
    "RESUME_BACKOFF",
    "RESUME_WINDOW_S",
    "UNREACHABLE_STATUSES",
    "auth_parts",
    "close_reason",
    "connect_failed",
    "handshake_error",
    "handshake_timed_out",
    "no_welcome",
    "redact",
    "without_query",
]

#: Proxy answers meaning "the session's agent cannot be reached (yet)".
UNREACHABLE_STATUSES = frozenset({502, 503, 504})


#: Reopening a dropped connection to resume a command (a proxy restart takes ~1 s):
#: at most this many tries, all within :data:`RESUME_WINDOW_S`.
RESUME_BACKOFF = Backoff(attempts=12, base_delay=0.1, max_delay=1.0)
RESUME_WINDOW_S = 10.0


def auth_parts(token: str, *, in_subprotocol: bool) -> tuple[list[str], dict[str, str]]:
    """Return the subprotocols and headers that carry ``token`` (never the query string).

    Args:
        token: the session token.
        in_subprotocol: as a browser must, as a ``bearer.<token>`` subprotocol entry.
    """
    if in_subprotocol:
        return [naming.SUBPROTOCOL, f"{naming.TOKEN_BEARER_PREFIX}{token}"], {}
    return [naming.SUBPROTOCOL], {"Authorization": f"Bearer {token}"}


def without_query(url: str) -> str:
    """The URL as shown in messages: a token put in a query string or fragment must not leak."""
    return url.split("#", 1)[0].split("?", 1)[0]


def redact(text: str, token: str) -> str:
    """Replace every occurrence of ``token`` in ``text``."""
    return text.replace(token, "***") if token else text


def _body_code(body: bytes | None) -> str | None:
    try:
        data = json.loads(body or b"")
    except ValueError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def handshake_error(
    url: str, status: int, body: bytes | None
) -> HandshakeRejectedError | SessionUnreachableError:
    """The typed error for an HTTP refusal of the handshake.

    Args:
        url: the URL shown (already without its query).
        status: the HTTP status.
        body: the response body (a JSON ``code`` is read from it when present).
    """
    code = _body_code(body)
    what = f"{url} answered {status}" + (f" ({code})" if code else "")
    if status == 401:
        return SessionUnauthorizedError(
            "Error joining session: the token was refused",
            status=401,
            code=code,
            cause=f"{url} answered 401",
            hint="use the token returned when the session was created",
        )
    if status in UNREACHABLE_STATUSES:
        return SessionUnreachableError(
            status=status,
            code=code,
            cause=what,
            hint="the proxy cannot reach the session: is it running and ready?",
        )
    return HandshakeRejectedError(
        "Error joining session: the handshake was refused",
        status=status,
        code=code,
        cause=what,
        hint="check the session id in the URL" if status == 404 else None,
    )


def handshake_timed_out(url: str, timeout: float) -> SessionConnectError:
    """The error for a handshake that did not complete within ``timeout``."""
    return SessionConnectError(
        cause=f"handshake with {url} timed out after {timeout}s",
        hint="is the session ready, and the proxy reachable?",
    )


def connect_failed(url: str, exc: BaseException, token: str) -> SessionConnectError:
    """The error for a socket-level failure (refused, DNS, reset) while connecting."""
    return SessionConnectError(
        cause=f"{url}: {type(exc).__name__}: {redact(str(exc), token)}",
        hint="check the URL, and that the proxy (or agent) is running",
    )


def no_welcome(url: str, timeout: float) -> SessionConnectError:
    """The error for a server that accepted the handshake but sent no welcome."""
    return SessionConnectError(
        cause=f"{url} sent no welcome within {timeout}s",
        hint="is this a session agent speaking gamgui.session.v1?",
    )


def close_reason(code: int | None, reason: str = "") -> str:
    """How a close frame reads in a ConnectionLostError's cause."""
    if code is None:
        return "closed by the agent"
    return f"closed by the agent with code {code}" + (f" ({reason})" if reason else "")
