"""A blocking client for one session, on ``websocket-client``.

Used by the manager, the CLI and the smoke tests. It speaks protocol v1
(:mod:`session_runtime.protocol`) and turns every failure into a typed error
from :mod:`session_runtime.errors`; no message it builds contains the token.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import websocket

from session_runtime import naming
from session_runtime.errors import (
    CommandRejectedError,
    CommandTimeoutError,
    ConnectionLostError,
    HandshakeRejectedError,
    ProtocolError,
    SessionConnectError,
    SessionUnauthorizedError,
    SessionUnreachableError,
)
from session_runtime.models import CommandResult
from session_runtime.protocol import (
    AgentMessage,
    AgentMessageModel,
    CancelMessage,
    CommandMessage,
    ErrorMessage,
    ExitMessage,
    OutputMessage,
    PingMessage,
    PongMessage,
    ProtocolViolation,
    StartedMessage,
    Stream,
    WelcomeMessage,
    encode,
    parse_agent_message,
)

__all__ = ["InitialCommand", "OutputChunk", "SessionConnection"]

_UNREACHABLE = frozenset({502, 503, 504})
_Message = AgentMessageModel


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a command's output as the agent sent it."""

    stream: Stream
    data: str


@dataclass
class InitialCommand:
    """The session's initial command as replayed by the agent (``exit`` None while running)."""

    argv: list[str]
    stdout: str = ""
    stderr: str = ""
    exit: ExitMessage | None = None


def _status_code(body: bytes | None) -> str | None:
    try:
        data = json.loads(body or b"")
    except ValueError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def _close_reason(data: bytes) -> str:
    if len(data) >= 2:
        code = int.from_bytes(data[:2], "big")
        reason = data[2:].decode("utf-8", "replace")
        return f"closed by the agent with code {code}" + (f" ({reason})" if reason else "")
    return "closed by the agent"


class SessionConnection:
    """An open WebSocket to one session's agent. Use :meth:`open`.

    One thread reads at a time (``run``, ``stream``, ``ping``); :meth:`cancel`
    may be called from another thread while a command streams.

    Args:
        ws: a connected ``websocket.WebSocket``.
        welcome: the agent's first message.
        url: the URL it was opened with (for messages).
    """

    def __init__(self, ws: websocket.WebSocket, welcome: WelcomeMessage, url: str) -> None:
        self._ws = ws
        self.welcome = welcome
        self.url = url
        self.initial: InitialCommand | None = None
        self.last_exit: ExitMessage | None = None
        self._pending: deque[_Message] = deque()
        self._ids = itertools.count(1)
        self._running: str | None = None
        self._abandoned: str | None = None

    # --- opening ------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        token_in_subprotocol: bool = False,
    ) -> SessionConnection:
        """Connect, authenticate and read the welcome.

        Args:
            url: ``ws://`` or ``wss://`` URL of the session path (proxy or agent).
            token: the session token, sent as ``Authorization: Bearer`` or, with
                ``token_in_subprotocol``, as a ``bearer.<token>`` subprotocol entry.
            timeout: seconds for connecting and for the welcome.
            token_in_subprotocol: authenticate as a browser would.

        Raises:
            SessionUnauthorizedError: 401, the token was refused.
            HandshakeRejectedError: 404 or another refusal (``status``, ``code``).
            SessionUnreachableError: 502/503/504 from the proxy.
            SessionConnectError: refused, DNS failure, handshake timeout.
        """
        # Messages show the URL without its query string: a token put there must not leak.
        target, url = url, _without_query(url)
        subprotocols = [naming.SUBPROTOCOL]
        headers: list[str] = []
        if token_in_subprotocol:
            subprotocols.append(f"{naming.TOKEN_BEARER_PREFIX}{token}")
        else:
            headers.append(f"Authorization: Bearer {token}")
        try:
            ws = websocket.create_connection(
                target,
                timeout=timeout,
                header=headers,
                subprotocols=subprotocols,
                enable_multithread=True,
                # Frames are decoded (strictly) when parsed; the pure-Python check is ~1 MB/s.
                skip_utf8_validation=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            raise _handshake_error(url, exc.status_code, exc.resp_body) from None
        except (websocket.WebSocketTimeoutException, TimeoutError):
            raise SessionConnectError(
                cause=f"handshake with {url} timed out after {timeout}s",
                hint="is the session ready, and the proxy reachable?",
            ) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise SessionConnectError(
                cause=f"{url}: {type(exc).__name__}: {_safe(str(exc), token)}",
                hint="check the URL, and that the proxy (or agent) is running",
            ) from None
        connection = cls(ws, WelcomeMessage(session_id="", agent_version=""), url)
        try:
            first = connection._receive(time.monotonic() + timeout)
        except CommandTimeoutError:
            connection.close()
            raise SessionConnectError(
                cause=f"{url} sent no welcome within {timeout}s",
                hint="is this a session agent speaking gamgui.session.v1?",
            ) from None
        except Exception:
            connection.close()
            raise
        if not isinstance(first, WelcomeMessage):
            connection.close()
            raise ProtocolError(f"expected a welcome from {url}", cause=f"got {first.type!r}")
        connection.welcome = first
        return connection

    # --- context manager ------------------------------------------------------------
    def __enter__(self) -> SessionConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the WebSocket (a running command is then killed by the agent)."""
        with contextlib.suppress(Exception):
            self._ws.close(timeout=2)

    # --- commands -----------------------------------------------------------------
    def run(self, command: str | Sequence[str], *, timeout: float | None = None) -> CommandResult:
        """Run a command to completion and return its exit code and output.

        Args:
            command: a command line (``"info domain"``, split by the agent) or an argv list.
            timeout: seconds; on expiry the command is cancelled.

        Raises:
            CommandRejectedError: the agent refused it (``busy``, ``bad_request`` ...).
            CommandTimeoutError: it ran longer than ``timeout`` (or the agent's limit).
            ConnectionLostError: the connection closed before the exit.
        """
        stdout: list[str] = []
        stderr: list[str] = []
        for chunk in self.stream(command, timeout=timeout):
            (stdout if chunk.stream == "stdout" else stderr).append(chunk.data)
        exit_message = self.last_exit
        assert exit_message is not None  # noqa: S101 - stream() ends only after an exit
        return CommandResult(
            exit_code=exit_message.code,
            stdout="".join(stdout),
            stderr="".join(stderr),
            duration_ms=exit_message.duration_ms,
        )

    def stream(
        self, command: str | Sequence[str], *, timeout: float | None = None
    ) -> Iterator[OutputChunk]:
        """Run a command and yield its output chunks as they arrive.

        The exit is stored in :attr:`last_exit` when the iterator ends.

        Args:
            command: a command line or an argv list.
            timeout: seconds for the whole command; on expiry it is cancelled.

        Raises:
            The same errors as :meth:`run`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._settle_abandoned()
        self._await_initial(deadline)
        command_id = f"c{next(self._ids)}"
        if isinstance(command, str):
            message = CommandMessage(id=command_id, command=command)
        else:
            message = CommandMessage(id=command_id, argv=list(command))
        self.last_exit = None
        self._send(encode(message))
        self._running = command_id
        try:
            while True:
                try:
                    reply = self._receive(deadline)
                except CommandTimeoutError:
                    self.cancel()
                    self._abandoned = command_id
                    raise CommandTimeoutError(
                        f"Command did not finish within {timeout}s", cause="cancelled"
                    ) from None
                if isinstance(reply, ErrorMessage) and reply.id in (command_id, None):
                    raise CommandRejectedError(reply.message, code=reply.code)
                if getattr(reply, "id", None) != command_id:
                    continue
                if isinstance(reply, OutputMessage):
                    yield OutputChunk(reply.stream, reply.data)
                elif isinstance(reply, ExitMessage):
                    self.last_exit = reply
                    if reply.timed_out:
                        raise CommandTimeoutError(
                            "Command exceeded the session's command timeout",
                            cause=f"exit code {reply.code} after {reply.duration_ms} ms",
                        )
                    return
        finally:
            if self._running == command_id:
                self._running = None

    def wait_for_initial(self, timeout: float | None = None) -> InitialCommand | None:
        """Wait until the session's initial command has exited, and return it.

        A session created with a command (``SESSION_COMMAND``) runs it first; a
        command sent meanwhile would be refused as busy, so :meth:`stream` and
        :meth:`run` wait here first.

        Args:
            timeout: seconds to wait; None waits as long as the command runs.

        Raises:
            CommandTimeoutError: it was still running after ``timeout``.
        """
        self._await_initial(None if timeout is None else time.monotonic() + timeout)
        return self.initial

    def cancel(self) -> None:
        """Ask the agent to stop the running command (the exit still arrives)."""
        self._send(encode(CancelMessage(id=self._running)))

    def ping(self, timeout: float = 5.0) -> float:
        """Send a protocol ping and return the round trip in seconds.

        Args:
            timeout: seconds to wait for the pong.

        Raises:
            CommandTimeoutError: no pong in time.
        """
        ping_id = f"p{next(self._ids)}"
        started = time.monotonic()
        self._send(encode(PingMessage(id=ping_id)))
        deadline = started + timeout
        held: list[_Message] = []
        try:
            while True:
                reply = self._receive(deadline)
                if isinstance(reply, PongMessage) and reply.id == ping_id:
                    return time.monotonic() - started
                held.append(reply)
        finally:
            self._pending.extendleft(reversed(held))

    # --- internals --------------------------------------------------------------------
    def _settle_abandoned(self) -> None:
        """Wait for the exit of a command given up on, so the next one is not busy."""
        abandoned, self._abandoned = self._abandoned, None
        if abandoned is None:
            return
        deadline = time.monotonic() + 30
        with contextlib.suppress(CommandTimeoutError):
            while True:
                reply = self._receive(deadline)
                if isinstance(reply, ExitMessage) and reply.id == abandoned:
                    return

    def _await_initial(self, deadline: float | None) -> None:
        """Read (and keep) messages until the initial command's exit has arrived."""
        if not self.welcome.initial_command:
            return
        held: list[_Message] = []
        try:
            while self.initial is None or self.initial.exit is None:
                message = self._read(deadline)
                if getattr(message, "initial", False):
                    self._record_initial(message)
                else:
                    held.append(message)
        except CommandTimeoutError:
            raise CommandTimeoutError(
                "The session's initial command is still running",
                hint="wait for it, or give the command a longer timeout",
            ) from None
        finally:
            self._pending.extend(held)

    def _send(self, frame: str) -> None:
        try:
            self._ws.send(frame)
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLostError(cause=f"send failed: {type(exc).__name__}") from None

    def _receive(self, deadline: float | None) -> _Message:
        """Return the next agent message (initial-command replay is absorbed)."""
        while True:
            if self._pending:
                return self._pending.popleft()
            message = self._read(deadline)
            if getattr(message, "initial", False):
                self._record_initial(message)
                continue
            return message

    def _read(self, deadline: float | None) -> _Message:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeoutError("Timed out waiting for the session")
            self._ws.settimeout(remaining)
        else:
            self._ws.settimeout(None)
        try:
            opcode, data = self._ws.recv_data()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            raise CommandTimeoutError("Timed out waiting for the session") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLostError(
                cause=f"{self.url}: {type(exc).__name__}",
                hint="the agent stopped, or the proxy closed the connection",
            ) from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionLostError(cause=_close_reason(data))
        try:
            return parse_agent_message(data)
        except ProtocolViolation as exc:
            raise ProtocolError("The agent sent an invalid message", cause=exc.message) from None

    def _record_initial(self, message: AgentMessage) -> None:
        if isinstance(message, StartedMessage):
            self.initial = InitialCommand(argv=message.argv)
        elif self.initial is None:
            self.initial = InitialCommand(argv=[])
        if isinstance(message, OutputMessage):
            if message.stream == "stdout":
                self.initial.stdout += message.data
            else:
                self.initial.stderr += message.data
        elif isinstance(message, ExitMessage):
            self.initial.exit = message


def _safe(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _without_query(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0]


def _handshake_error(
    url: str, status: int, body: bytes | None
) -> HandshakeRejectedError | SessionUnreachableError:
    code = _status_code(body)
    if status == 401:
        return SessionUnauthorizedError(
            "Error joining session: the token was refused",
            status=401,
            code=code,
            cause=f"{url} answered 401",
            hint="use the token returned when the session was created",
        )
    if status in _UNREACHABLE:
        return SessionUnreachableError(
            status=status,
            code=code,
            cause=f"{url} answered {status}" + (f" ({code})" if code else ""),
            hint="the proxy cannot reach the session: is it running and ready?",
        )
    return HandshakeRejectedError(
        "Error joining session: the handshake was refused",
        status=status,
        code=code,
        cause=f"{url} answered {status}" + (f" ({code})" if code else ""),
        hint="check the session id in the URL" if status == 404 else None,
    )
