"""HTTP and WebSocket handling: health, path and token checks, then the message loop.

Everything is decided before the upgrade: ``/healthz`` is answered as plain
HTTP (and is not activity); any other path than this session's gets 404; a
missing or wrong token gets 401 and nothing runs. Tokens are compared in
constant time and never logged. After the upgrade, each frame is parsed by
:mod:`session_runtime.protocol` and answered.
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
from session_runtime.agent.log import log_event
from session_runtime.agent.metrics import metrics_response
from session_runtime.agent.runner import SinkGone
from session_runtime.agent.session import Send, Session, SessionBusy
from session_runtime.protocol import (
    CancelMessage,
    CommandMessage,
    ErrorCode,
    ErrorMessage,
    PongMessage,
    ProtocolViolation,
    WelcomeMessage,
    command_argv,
    encode,
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
            "connections": len(s.connections),
        }

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
            log_event("rejected", level="warning", status=404, reason="path")
            return _error(HTTPStatus.NOT_FOUND, "not_found", "no such session on this agent")
        if not self._authorized(request):
            log_event("rejected", level="warning", status=401, reason="token")
            return _error(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or invalid token")
        if len(self.session.connections) >= self.session.config.max_connections:
            log_event("rejected", level="warning", status=429, reason="connections")
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
        """Serve one connection until it closes; its running command dies with it."""
        s = self.session
        s.connections.add(connection)
        s.touch()
        peer = _peer(connection)
        log_event("connected", peer=peer, connections=len(s.connections))

        async def send(frame: str) -> None:
            try:
                await connection.send(frame)
            except ConnectionClosed:
                raise SinkGone from None

        try:
            welcome = WelcomeMessage(
                session_id=s.config.session_id,
                agent_version=AGENT_VERSION,
                gam_version=s.gam_version,
                busy=s.busy,
                initial_command=s.replay is not None,
            )
            await send(encode(welcome))
            await s.replay_to(connection, send)
            async for frame in connection:
                s.touch()
                await self._dispatch(connection, frame, send)
        except (ConnectionClosed, SinkGone):
            pass
        finally:
            s.connections.discard(connection)
            s.unsubscribe(connection)
            job = s.job
            if job is not None and job.owner is connection:
                log_event("client_gone_mid_command", level="warning", id=job.id)
                job.run.stop("detached")
            log_event("disconnected", peer=peer, code=connection.close_code)

    async def _dispatch(self, connection: ServerConnection, frame: str | bytes, send: Send) -> None:
        try:
            message = parse_client_message(frame)
            if isinstance(message, CommandMessage):
                await self._command(connection, message, send)
            elif isinstance(message, CancelMessage):
                await self._cancel(connection, message, send)
            else:
                await send(encode(PongMessage(id=message.id)))
        except ProtocolViolation as exc:
            await _send_error(send, exc.code, exc.message, exc.message_id)

    async def _command(
        self, connection: ServerConnection, message: CommandMessage, send: Send
    ) -> None:
        s = self.session
        argv = command_argv(message)
        job_id = message.id or s.next_id()
        try:
            s.start(job_id, argv, connection, send)
        except SessionBusy as exc:
            await _send_error(send, "busy", f"a command is already running: {exc}", message.id)

    async def _cancel(
        self, connection: ServerConnection, message: CancelMessage, send: Send
    ) -> None:
        job = self.session.job
        if job is None:
            await _send_error(send, "bad_request", "no command is running", message.id)
        elif message.id is not None and message.id != job.id:
            await _send_error(
                send, "bad_request", f"no command {message.id!r} is running", message.id
            )
        elif job.owner is not connection:
            await _send_error(
                send, "not_allowed", "the running command belongs to another connection", message.id
            )
        else:
            log_event("command_cancel", id=job.id)
            job.run.stop("cancelled")


async def _send_error(send: Send, code: ErrorCode, text: str, message_id: str | None) -> None:
    await send(encode(ErrorMessage(code=code, message=text, id=message_id)))


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown"
    return f"{host}:{port}"
