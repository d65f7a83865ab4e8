"""The blocking client for one session, on ``websocket-client``: a thin shell.

Every rule of the conversation (ids, one command at a time, the initial
command's replay, abandoned commands, seq bookkeeping, resume) lives in
:class:`~session_runtime.conversation.Conversation`; this module only moves
frames, keeps time and maps socket failures to the typed errors of
:mod:`session_runtime.errors` (via :mod:`session_runtime.handshake`). Its
asyncio twin, :class:`~session_runtime.aclient.AsyncSessionConnection`, has the
same methods, errors and docstrings. No message it builds contains the token.

A dropped connection in the middle of a command is reopened and the command
resumed (``attach`` after the last seq seen) when the agent speaks v1.1:
bounded by :data:`~session_runtime.handshake.RESUME_BACKOFF`, then
:class:`~session_runtime.errors.ConnectionLostError`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import websocket

from session_runtime.conversation import (
    CommandRecord,
    Conversation,
    Event,
    InitialCommand,
    OutputChunk,
)
from session_runtime.errors import (
    CommandRejectedError,
    CommandTimeoutError,
    ConnectionLostError,
    ProtocolError,
    SessionConnectError,
    SessionError,
    SessionUnauthorizedError,
)
from session_runtime.handshake import (
    RESUME_BACKOFF,
    RESUME_WINDOW_S,
    auth_parts,
    close_reason,
    connect_failed,
    handshake_error,
    handshake_timed_out,
    no_welcome,
    without_query,
)
from session_runtime.models import CommandResult
from session_runtime.protocol import (
    ExitMessage,
    OutputMessage,
    StartedMessage,
    TtySize,
    WelcomeMessage,
)
from session_runtime.retry import Backoff

__all__ = ["Command", "InitialCommand", "OutputChunk", "SessionConnection"]

#: How long a new command waits for an abandoned one's exit before trying anyway.
SETTLE_TIMEOUT_S = 30.0

_Opener = Callable[[], websocket.WebSocket]


def _open_socket(
    target: str, url: str, token: str, timeout: float, token_in_subprotocol: bool
) -> websocket.WebSocket:
    subprotocols, headers = auth_parts(token, in_subprotocol=token_in_subprotocol)
    try:
        return websocket.create_connection(
            target,
            timeout=timeout,
            header=[f"{k}: {v}" for k, v in headers.items()],
            subprotocols=subprotocols,
            enable_multithread=True,
            # Frames are decoded (strictly) when parsed; the pure-Python check is ~1 MB/s.
            skip_utf8_validation=True,
        )
    except websocket.WebSocketBadStatusException as exc:
        raise handshake_error(url, exc.status_code, exc.resp_body) from exc
    except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
        raise handshake_timed_out(url, timeout) from exc
    except (OSError, websocket.WebSocketException) as exc:
        raise connect_failed(url, exc, token) from None  # the exception text may hold the URL


class Command:
    """One command in a session: its output, its exit, its input. Get one from
    :meth:`SessionConnection.command` or :meth:`SessionConnection.attach`.

    Use it as a context manager: leaving the block before the exit cancels the
    command (and the connection stays usable). ``seq`` is the last sequence
    number seen (0 with a v1 agent), ``gaps`` the ranges the agent's buffer
    dropped, ``exit`` the exit message once it arrived.
    """

    def __init__(
        self,
        connection: SessionConnection,
        command_id: str,
        timeout: float | None,
        deadline: float | None = None,
    ) -> None:
        self._conn = connection
        self.id = command_id
        self.timeout = timeout
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        self._deadline = deadline
        self._record = CommandRecord(command_id)
        self._done = False

    def __enter__(self) -> Command:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def done(self) -> bool:
        """True once the exit arrived, or the command was given up on."""
        return self._done

    @property
    def started(self) -> StartedMessage | None:
        """The command's ``started`` (its argv, stdin and tty), once it arrived."""
        return self._record.started

    @property
    def exit(self) -> ExitMessage | None:
        """The command's ``exit``, once it arrived."""
        return self._record.exit

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """Ranges ``(from_seq, to_seq)`` of output the agent's buffer dropped."""
        return self._record.gaps

    @property
    def seq(self) -> int:
        """The last seq seen (0 before any output, and with v1 agents)."""
        return self._record.seq

    def close(self) -> None:
        """Cancel the command unless it has ended, and stop following it."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(SessionError):
            self._conn._conv_cancel(self.id)
        self._conn._abandon(self.id)

    def events(self) -> Iterator[Event]:
        """Yield every message about the command as it arrives: ``started``, ``output``,
        ``gap`` (also for a hole the client found), a refused request's ``error``, ``exit``.

        For relays that pass the protocol on (a browser, a JSON-lines CLI). Ends
        after the exit; a timed-out exit is yielded, not raised.

        Raises:
            CommandRejectedError: the agent refused the command (``busy``, ``bad_request`` ...).
            CommandTimeoutError: the timeout passed (the command is cancelled).
            ConnectionLostError: the connection dropped and could not be resumed.
        """
        while not self._done:
            try:
                event = self._conn._next_event(self._deadline)
            except CommandTimeoutError:
                self.close()
                raise CommandTimeoutError(
                    f"Command did not finish within {self.timeout}s", cause="cancelled"
                ) from None
            except SessionError:
                self._done = True
                self._conn._forget(self.id)
                raise
            try:
                mine = self._record.apply(event)
            except CommandRejectedError:
                self._done = True
                raise
            if mine is None:
                continue
            if isinstance(mine, ExitMessage):
                self._done = True
                self._conn.last_exit = mine
            yield mine

    def chunks(self) -> Iterator[OutputChunk]:
        """Yield the output as it arrives, until the exit (then in :attr:`exit`).

        Raises:
            CommandRejectedError: the agent refused the command (``busy``, ``bad_request`` ...).
            CommandTimeoutError: the timeout passed (the command is cancelled), or
                the agent's own command timeout ended it.
            ConnectionLostError: the connection dropped and could not be resumed.
        """
        for event in self.events():
            if isinstance(event, OutputMessage):
                yield OutputChunk(event.stream, event.data, event.seq)
        self._record.check_exit()

    def result(self) -> CommandResult:
        """Wait for the exit and return it with the output not yet read through :meth:`chunks`.

        Raises:
            The errors of :meth:`chunks`.
        """
        stdout: list[str] = []
        stderr: list[str] = []
        for chunk in self.chunks():
            (stderr if chunk.stream == "stderr" else stdout).append(chunk.data)
        if self.exit is None:
            raise ConnectionLostError(cause="the command was given up before its exit")
        return CommandResult(
            exit_code=self.exit.code,
            stdout="".join(stdout),
            stderr="".join(stderr),
            duration_ms=self.exit.duration_ms,
        )

    def cancel(self) -> None:
        """Ask the agent to stop the command (SIGTERM, then SIGKILL); the exit still arrives."""
        self._conn._conv_cancel(self.id)

    def write(self, data: str) -> None:
        """Send ``data`` to the command's stdin (started with ``stdin=True`` or a tty).

        Raises:
            CommandRejectedError: the command reads no stdin, stdin is closed, or the
                agent refused an earlier write.
        """
        self._record.raise_refusal()
        self._conn._request(self.id, lambda conv: conv.write_stdin(data))

    def eof(self) -> None:
        """Close the command's stdin (end of input)."""
        self._record.raise_refusal()
        self._conn._request(self.id, lambda conv: conv.close_stdin())

    def resize(self, cols: int, rows: int) -> None:
        """Resize the command's terminal (a ``tty`` command gets SIGWINCH)."""
        self._record.raise_refusal()
        self._conn._request(self.id, lambda conv: conv.resize(cols, rows))


class SessionConnection:
    """An open WebSocket to one session's agent. Use :meth:`open`.

    One thread reads at a time (a command's ``chunks``, ``run``, ``stream``,
    ``ping``); :meth:`cancel` may be called from another thread while a
    command streams.

    Args:
        ws: a connected ``websocket.WebSocket``.
        welcome: the agent's first message (already received).
        url: the URL it was opened with (for messages).
        conversation: the conversation that received ``welcome``.
        reopen: opens a new socket to the same URL with the same token, for
            resuming a command after a drop; None disables resume.
        resume: the retry policy of resuming.
    """

    def __init__(
        self,
        ws: websocket.WebSocket,
        welcome: WelcomeMessage,
        url: str,
        *,
        conversation: Conversation | None = None,
        reopen: _Opener | None = None,
        resume: Backoff = RESUME_BACKOFF,
    ) -> None:
        self._ws = ws
        self.url = url
        self.last_exit: ExitMessage | None = None
        self._reopen = reopen
        self._resume = resume
        self._lock = threading.Lock()
        if conversation is None:
            conversation = Conversation()
            conversation.receive_message(welcome)
        self._conv = conversation

    # --- opening ------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        token_in_subprotocol: bool = False,
        resume: Backoff | None = RESUME_BACKOFF,
    ) -> SessionConnection:
        """Connect, authenticate and read the welcome.

        Args:
            url: ``ws://`` or ``wss://`` URL of the session path (proxy or agent).
            token: the session token, sent as ``Authorization: Bearer`` or, with
                ``token_in_subprotocol``, as a ``bearer.<token>`` subprotocol entry.
            timeout: seconds for connecting and for the welcome.
            token_in_subprotocol: authenticate as a browser would.
            resume: how a command is resumed after a dropped connection (v1.1
                agents); None turns resuming off.

        Raises:
            SessionUnauthorizedError: 401, the token was refused.
            HandshakeRejectedError: 404 or another refusal (``status``, ``code``).
            SessionUnreachableError: 502/503/504 from the proxy.
            SessionConnectError: refused, DNS failure, handshake timeout, no welcome.
            ProtocolError: the server's first message is not a welcome.
        """
        shown = without_query(url)

        def reopen() -> websocket.WebSocket:
            return _open_socket(url, shown, token, timeout, token_in_subprotocol)

        ws = reopen()
        conversation = Conversation()
        connection = cls(
            ws,
            WelcomeMessage(session_id="", agent_version=""),
            shown,
            conversation=conversation,
            reopen=reopen if resume is not None else None,
            resume=resume or RESUME_BACKOFF,
        )
        try:
            connection._read_frame(time.monotonic() + timeout)
        except CommandTimeoutError:
            connection.close()
            raise no_welcome(shown, timeout) from None
        except Exception:
            connection.close()
            raise
        if not conversation.welcomed:  # pragma: no cover - receive_frame raises first
            connection.close()
            raise ProtocolError(f"expected a welcome from {shown}")
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
        """Close the WebSocket (a v1.1 agent keeps a running command until its detach timeout)."""
        self._reopen = None
        with contextlib.suppress(Exception):
            self._ws.close(timeout=2)

    # --- state --------------------------------------------------------------------
    @property
    def welcome(self) -> WelcomeMessage:
        """The agent's welcome on the current connection (the latest after a resume)."""
        assert self._conv.welcome is not None  # noqa: S101 - open() read it
        return self._conv.welcome

    @property
    def initial(self) -> InitialCommand | None:
        """The session's initial command as replayed so far (None if there is none yet)."""
        return self._conv.initial

    @property
    def conversation(self) -> Conversation:
        """The sans-I/O conversation under this connection."""
        return self._conv

    # --- commands -----------------------------------------------------------------
    def command(
        self,
        command: str | Sequence[str],
        *,
        stdin: bool = False,
        tty: tuple[int, int] | None = None,
        timeout: float | None = None,
    ) -> Command:
        """Start a command and return its handle (use it in a ``with`` block).

        Waits first for the session's initial command and for a command given up
        on earlier, so the new one is not refused as busy.

        Args:
            command: a command line (``"info domain"``, split by the agent) or an argv list.
            stdin: the command reads what :meth:`Command.write` sends.
            tty: ``(cols, rows)``: run it under a pseudo-terminal of that size.
            timeout: seconds for the whole command; on expiry it is cancelled.

        Raises:
            CommandRejectedError: ``busy``, a command is still in flight here.
            CommandTimeoutError: the initial command was still running at the timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._prepare(deadline)
        size = TtySize(cols=tty[0], rows=tty[1]) if tty is not None else None
        with self._lock:
            command_id = self._conv.start_command(command, stdin=stdin, tty=size)
            self.last_exit = None
            self._flush()
        return Command(self, command_id, timeout, deadline)

    def attach(
        self, command_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> Command:
        """Follow a command of this session (any client's): replay after ``after_seq``, then live.

        Args:
            command_id: the command's id (``welcome.commands`` lists the current and last).
            after_seq: the last seq already seen; 0 replays everything retained.
            timeout: seconds to follow it; on expiry it is cancelled.

        Raises:
            CommandRejectedError: from the handle: ``bad_request`` for an unknown id.
        """
        with self._lock:
            self._conv.attach(command_id, after_seq)
            self.last_exit = None
            self._flush()
        return Command(self, command_id, timeout)

    def run(self, command: str | Sequence[str], *, timeout: float | None = None) -> CommandResult:
        """Run a command to completion and return its exit code and output.

        Args:
            command: a command line (``"info domain"``, split by the agent) or an argv list.
            timeout: seconds; on expiry the command is cancelled.

        Raises:
            CommandRejectedError: the agent refused it (``busy``, ``bad_request`` ...).
            CommandTimeoutError: it ran longer than ``timeout`` (or the agent's limit).
            ConnectionLostError: the connection closed before the exit and could not
                be resumed.
        """
        with self.command(command, timeout=timeout) as cmd:
            return cmd.result()

    def stream(
        self, command: str | Sequence[str], *, timeout: float | None = None
    ) -> Iterator[OutputChunk]:
        """Run a command and yield its output chunks as they arrive.

        The exit is stored in :attr:`last_exit` when the iterator ends; closing
        the iterator early (``break``, ``close()``) cancels the command.

        Args:
            command: a command line or an argv list.
            timeout: seconds for the whole command; on expiry it is cancelled.

        Raises:
            The same errors as :meth:`run`.
        """
        with self.command(command, timeout=timeout) as cmd:
            yield from cmd.chunks()

    def wait_for_initial(self, timeout: float | None = None) -> InitialCommand | None:
        """Wait until the session's initial command has exited, and return it.

        A session created with a command (``SESSION_COMMAND``) runs it first; a
        command sent meanwhile would be refused as busy, so :meth:`command`
        waits here first.

        Args:
            timeout: seconds to wait; None waits as long as the command runs.

        Raises:
            CommandTimeoutError: it was still running after ``timeout``.
        """
        self._await_initial(None if timeout is None else time.monotonic() + timeout)
        return self.initial

    def cancel(self) -> None:
        """Ask the agent to stop the running command (the exit still arrives)."""
        self._conv_cancel(None)

    def ping(self, timeout: float = 5.0) -> float:
        """Send a protocol ping and return the round trip in seconds.

        Messages that arrive meanwhile are kept for the command that reads next.

        Args:
            timeout: seconds to wait for the pong.

        Raises:
            CommandTimeoutError: no pong in time.
            ConnectionLostError: the connection closed.
        """
        started = time.monotonic()
        with self._lock:
            ping_id = self._conv.ping()
            self._flush()
        deadline = started + timeout
        while not self._conv.ping_answered(ping_id):
            try:
                self._read_frame(deadline)
            except CommandTimeoutError:
                raise CommandTimeoutError(f"No pong within {timeout}s", cause=self.url) from None
        return time.monotonic() - started

    # --- for Command -------------------------------------------------------------------
    def _conv_cancel(self, command_id: str | None) -> None:
        with self._lock:
            self._conv.cancel(command_id)
            self._flush()

    def _abandon(self, command_id: str) -> None:
        if self._conv.current_id == command_id:
            self._conv.abandon()

    def _forget(self, command_id: str) -> None:
        """A command ended in an error: nothing of it is awaited any more."""
        if self._conv.current_id == command_id:
            self._conv.drop()

    def _request(self, command_id: str, queue: Callable[[Conversation], None]) -> None:
        with self._lock:
            if self._conv.current_id != command_id:
                raise CommandRejectedError("the command has ended", code="bad_request")
            queue(self._conv)
            self._flush()

    def _next_event(self, deadline: float | None) -> Event:
        """Return the next command event, reading (and resuming) as needed."""
        while True:
            event = self._conv.next_event()
            if event is not None:
                return event
            self._read_frame(deadline)

    # --- internals --------------------------------------------------------------------
    def _prepare(self, deadline: float | None) -> None:
        """Before a command: settle an abandoned one, wait for the initial one."""
        if self._conv.settling:
            settle = time.monotonic() + SETTLE_TIMEOUT_S
            with contextlib.suppress(CommandTimeoutError):
                while self._conv.settling:
                    self._read_frame(settle)
        self._await_initial(deadline)

    def _await_initial(self, deadline: float | None) -> None:
        try:
            while self._conv.initial_pending:
                self._read_frame(deadline)
        except CommandTimeoutError:
            raise CommandTimeoutError(
                "The session's initial command is still running",
                hint="wait for it, or give the command a longer timeout",
            ) from None

    def _flush(self) -> None:
        """Send what the conversation queued (hold ``_lock``)."""
        frames = self._conv.data_to_send()
        for sent, frame in enumerate(frames):
            try:
                self._ws.send(frame)
            except (OSError, websocket.WebSocketException) as exc:
                self._conv.unsent(frames[sent:])
                raise ConnectionLostError(cause=f"send failed: {type(exc).__name__}") from None

    def _send(self, frame: str) -> None:
        """Send one raw frame (for tests of the agent's refusals)."""
        with self._lock:
            try:
                self._ws.send(frame)
            except (OSError, websocket.WebSocketException) as exc:
                raise ConnectionLostError(cause=f"send failed: {type(exc).__name__}") from None

    def _receive(self, deadline: float | None) -> Event:
        """Return the next event (for tests of the agent's refusals)."""
        return self._next_event(deadline)

    def _read_frame(self, deadline: float | None) -> None:
        """Read one frame into the conversation; on a drop, resume or raise."""
        try:
            data = self._recv(deadline)
        except ConnectionLostError as lost:
            if self._reopen is None or not self._conv.connection_lost():
                raise
            self._reconnect(lost, deadline)
            return
        self._conv.receive_frame(data)
        with self._lock:
            self._flush()

    def _recv(self, deadline: float | None) -> bytes:
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
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise ConnectionLostError(cause=close_reason(code, data[2:].decode("utf-8", "replace")))
        return bytes(data)

    def _reconnect(self, lost: ConnectionLostError, deadline: float | None) -> None:
        """Open a new socket (bounded retries); the next frame read is its welcome."""
        assert self._reopen is not None  # noqa: S101 - checked by the caller
        with contextlib.suppress(Exception):
            self._ws.close(timeout=0)
        window_end = time.monotonic() + RESUME_WINDOW_S
        attempt = 0
        while True:
            attempt += 1
            try:
                self._ws = self._reopen()
                return
            except SessionUnauthorizedError as exc:
                failure: SessionError = exc
                break
            except SessionConnectError as exc:  # includes 502/503/504
                failure = exc
            except SessionError as exc:  # 404 and other refusals: retried, a restart may lag
                failure = exc
            if attempt >= self._resume.attempts:
                break
            delay = self._resume.delay(attempt)
            now = time.monotonic()
            if now + delay > window_end:
                break
            if deadline is not None and now + delay >= deadline:
                break
            time.sleep(delay)
        raise ConnectionLostError(
            cause=f"{lost.cause}; resuming failed after {attempt} attempts: {failure}",
            hint="the agent stopped, or the proxy cannot reach it",
        ) from failure
