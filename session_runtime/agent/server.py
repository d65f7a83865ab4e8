"""HTTP and WebSocket handling: health, path and token checks, then the message loop.

Everything is decided before the upgrade: ``/healthz`` is answered as plain
HTTP (and is not activity); any other path than this session's gets 404; a
missing or wrong token gets 401 and nothing runs. Tokens are compared in
constant time and never logged. After the upgrade, each frame is parsed by
:mod:`session_runtime.protocol` and handed to the :class:`Session`; a refused
request is answered with an ``error`` and the connection stays open. Every
authenticated connection is equal: any of them may attach to, cancel or type
into the running command. Each connection, handshake refusal, command and
attach is reported to the session's observer (audit lines, metrics).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from http import HTTPStatus

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from session_runtime import naming
from session_runtime.agent import AGENT_VERSION
from session_runtime.agent.clients import client_info
from session_runtime.agent.live import Send, frame
from session_runtime.agent.log import log_event
from session_runtime.agent.metrics import metrics_response
from session_runtime.agent.observe import ClientInfo
from session_runtime.agent.runner import SinkGone
from session_runtime.agent.session import Session
from session_runtime.protocol import (
    PROTOCOL_REVISION,
    AttachMessage,
    CancelMessage,
    CommandMessage,
    ErrorCode,
    ErrorMessage,
    PongMessage,
    ProtocolViolation,
    ResizeMessage,
    StdinMessage,
    WelcomeMessage,
    command_argv,
    parse_client_message,
)

__all__ = ["SessionServer", "json_response"]


def json_response(status: HTTPStatus, body: dict[str, object]) -> Response:
    """Build an HTTP response with a JSON body (health, and handshake refusals).

    Args:
        status: the HTTP status.
        body: a JSON-ready object.
    """
    payload = json.dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ]
    )
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="gamgui-session"'
    return Response(status.value, status.phrase, headers, payload)


def _error(status: HTTPStatus, code: str, text: str) -> Response:
    return json_response(status, {"error": text, "code": code})


def offered_tokens(request: Request) -> list[str]:
    """Return the tokens a request offers: the Bearer header and ``bearer.`` subprotocols."""
    tokens: list[str] = []
    # Authorization is a singleton header: repeated, it is ambiguous and offers nothing
    # (``headers.get`` would raise MultipleValuesError and answer 500).
    auths = request.headers.get_all("Authorization")
    auth = auths[0] if len(auths) == 1 else ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        tokens.append(value.strip())
    for header in request.headers.get_all("Sec-WebSocket-Protocol"):
        for raw in header.split(","):
            entry = raw.strip()
            if entry.startswith(naming.TOKEN_BEARER_PREFIX):
                tokens.append(entry[len(naming.TOKEN_BEARER_PREFIX) :])
    return tokens


class SessionServer:
    """The callbacks handed to ``websockets.asyncio.server.serve``.

    Args:
        session: the shared session state.
        registry: the metrics ``/metrics`` serves (an empty registry when None).
    """

    def __init__(self, session: Session, registry: CollectorRegistry | None = None) -> None:
        self.session = session
        self.registry = registry if registry is not None else CollectorRegistry()
        self._path = naming.session_path(session.config.session_id)
        self._token = session.config.token.get_secret_value().encode()

    # --- before the upgrade -------------------------------------------------------
    def health(self) -> dict[str, object]:
        """Return the /healthz body."""
        s = self.session
        return {
            "status": "ok",
            "session_id": s.config.session_id,
            "busy": s.busy,
            "last_activity": round(s.last_activity, 3),
            "uptime_s": round(time.time() - s.started_at, 3),
            "credentials_found": bool(s.credentials_found),
            "gam_version": s.gam_version,
            "gam_mode": s.launcher.mode,
            "connections": len(s.connections),
        }

    def _rejected(
        self, connection: ServerConnection, request: Request, status: int, reason: str
    ) -> None:
        client = client_info(request.headers, _peer(connection))
        log_event("rejected", level="warning", status=status, reason=reason, client=client.client)
        self.session.observer.rejected(client, status, reason)

    def _authorized(self, request: Request) -> bool:
        ok = False
        for token in offered_tokens(request):
            # Check every offer, so timing does not tell which one matched.
            ok |= hmac.compare_digest(token.encode(), self._token)
        return ok

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer health checks and refuse bad handshakes before the upgrade.

        Args:
            connection: the connection being opened.
            request: the HTTP request.
        """
        path = request.path.split("?", 1)[0]
        if path == naming.HEALTH_PATH:
            return json_response(HTTPStatus.OK, self.health())
        if path == naming.METRICS_PATH:  # like health: no token, not activity
            return metrics_response(self.registry)
        if path != self._path:
            self._rejected(connection, request, 404, "path")
            return _error(HTTPStatus.NOT_FOUND, "not_found", "no such session on this agent")
        if not self._authorized(request):
            self._rejected(connection, request, 401, "token")
            return _error(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or invalid token")
        if len(self.session.connections) >= self.session.config.max_connections:
            self._rejected(connection, request, 429, "connections")
            return _error(
                HTTPStatus.TOO_MANY_REQUESTS,
                "too_many_connections",
                f"at most {self.session.config.max_connections} connections per session",
            )
        return None

    @staticmethod
    def select_subprotocol(
        connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """Pick the protocol version; never echo a ``bearer.`` entry back."""
        wanted = Subprotocol(naming.SUBPROTOCOL)
        return wanted if wanted in subprotocols else None

    # --- after the upgrade --------------------------------------------------------
    async def handle(self, connection: ServerConnection) -> None:
        """Serve one connection until it closes; its commands keep running without it."""
        s = self.session
        peer = _peer(connection)
        client = client_info(connection.request.headers if connection.request else Headers(), peer)
        s.connections.add(connection)
        s.touch()
        log_event(
            "connected",
            peer=peer,
            connection_id=client.connection_id,
            connections=len(s.connections),
        )
        s.observer.connected(client)

        async def send(data: bytes) -> None:
            try:
                await connection.send(data, text=True)
            except ConnectionClosed:
                raise SinkGone from None

        try:
            welcome = WelcomeMessage(
                session_id=s.config.session_id,
                revision=PROTOCOL_REVISION,
                agent_version=AGENT_VERSION,
                gam_version=s.gam_version,
                gam_mode=s.launcher.mode,
                busy=s.busy,
                initial_command=s.initial is not None,
                commands=s.commands(),
            )
            await send(frame(welcome))
            s.join(connection, send)
            async for message in connection:
                s.touch()
                await self._dispatch(connection, client, message, send)
        except (ConnectionClosed, SinkGone):
            pass
        finally:
            s.leave(connection)
            log_event(
                "disconnected",
                peer=peer,
                connection_id=client.connection_id,
                code=connection.close_code,
            )
            s.observer.disconnected(client, connection.close_code)

    async def _dispatch(
        self, connection: ServerConnection, client: ClientInfo, data: str | bytes, send: Send
    ) -> None:
        s = self.session
        try:
            message = parse_client_message(data)
            if isinstance(message, CommandMessage):
                s.start(
                    message.id or s.next_id(),
                    command_argv(message),
                    connection,
                    send,
                    client=client,
                    stdin=message.stdin,
                    tty=message.tty,
                )
            elif isinstance(message, CancelMessage):
                s.cancel(message.id, client)
            elif isinstance(message, AttachMessage):
                s.attach(connection, send, message.id, message.after_seq, client)
            elif isinstance(message, StdinMessage):
                await s.write_stdin(message.id, None if message.eof else message.data, send)
            elif isinstance(message, ResizeMessage):
                s.resize(message.id, message.cols, message.rows)
            else:
                await send(frame(PongMessage(id=message.id)))
        except ProtocolViolation as exc:
            await _send_error(send, exc.code, exc.message, exc.message_id)


async def _send_error(send: Send, code: ErrorCode, text: str, message_id: str | None) -> None:
    await send(frame(ErrorMessage(code=code, message=text, id=message_id)))


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown"
    return f"{host}:{port}"
