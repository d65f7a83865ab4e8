"""The asyncio client for one session, on ``websockets.asyncio.client``: a thin shell.

The twin of :mod:`session_runtime.client` (like lightkube's ``Client`` and
``AsyncClient``): the same methods, errors and docstrings, awaited. All rules
live in :class:`~session_runtime.conversation.Conversation`; this module only
moves frames, keeps time (the event loop's clock) and maps failures to typed
errors through :mod:`session_runtime.handshake`. Nothing here blocks the loop.

A command handle is an async context manager; ``async for chunk in cmd``
streams, ``await cmd`` (or ``await cmd.result()``) waits for the exit, and
leaving the ``async with`` block early cancels the command. ``stream()`` is an
async generator: close it (``contextlib.aclosing``) to cancel promptly when
breaking out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

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

__all__ = ["AsyncCommand", "AsyncSessionConnection"]

#: How long a new command waits for an abandoned one's exit before trying anyway.
SETTLE_TIMEOUT_S = 30.0
#: Largest agent frame accepted (an output chunk is at most 64 KiB before JSON escaping).
MAX_FRAME_BYTES = 4 * 1024 * 1024

_Opener = Callable[[], Awaitable[ClientConnection]]


async def _open_socket(
    target: str, url: str, token: str, timeout: float, token_in_subprotocol: bool
) -> ClientConnection:
    subprotocols, headers = auth_parts(token, in_subprotocol=token_in_subprotocol)
    try:
        return await connect(
            target,
            subprotocols=[Subprotocol(p) for p in subprotocols],
            additional_headers=headers,
            open_timeout=timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,  # as websocket-client: JSON text, no deflate CPU on either side
            proxy=None,  # the session URL is the proxy already; no HTTP(S)_PROXY detour
            ping_interval=None,  # liveness is the protocol's ping, as in the sync shell
        )
    except InvalidStatus as exc:
        raise handshake_error(url, exc.response.status_code, bytes(exc.response.body)) from exc
    except TimeoutError as exc:
        raise handshake_timed_out(url, timeout) from exc
    except (OSError, WebSocketException) as exc:
        raise connect_failed(url, exc, token) from None  # the exception text may hold the URL


class AsyncCommand:
    """One command in a session: its output, its exit, its input. Get one from
    :meth:`AsyncSessionConnection.command` or :meth:`AsyncSessionConnection.attach`.

    Use it as an async context manager: leaving the block before the exit
    cancels the command (and the connection stays usable). ``seq`` is the last
    sequence number seen (0 with a v1 agent), ``gaps`` the ranges the agent's
    buffer dropped, ``exit`` the exit message once it arrived.
    """

    def __init__(
        self,
        connection: AsyncSessionConnection,
        command_id: str,
        timeout: float | None,
        deadline: float | None = None,
        starter: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._conn = connection
        self._starter = starter
        self.id = command_id
        self.timeout = timeout
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        self._deadline = deadline
        self._record = CommandRecord(command_id)
        self._done = False

    async def __aenter__(self) -> AsyncCommand:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self.chunks()

    def __await__(self) -> Generator[object, None, CommandResult]:
        return self.result().__await__()

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

    async def start(self) -> AsyncCommand:
        """Send the command (or attach) now; ``async with``, ``async for`` and ``await`` do.

        Raises:
            CommandRejectedError: ``busy``, a command is still in flight on the connection.
            CommandTimeoutError: the initial command was still running at the timeout.
        """
        starter, self._starter = self._starter, None
        if starter is not None:
            try:
                await starter()
            except BaseException:
                self._done = True
                raise
        return self

    async def close(self) -> None:
        """Cancel the command unless it has ended, and stop following it."""
        if self._done:
            return
        self._done = True
        if self._starter is not None:  # never sent: nothing to cancel
            self._starter = None
            return
        with contextlib.suppress(SessionError):
            await self._conn._conv_cancel(self.id)
        self._conn._abandon(self.id)

    async def events(self) -> AsyncIterator[Event]:
        """Yield every message about the command as it arrives: ``started``, ``output``,
        ``gap`` (also for a hole the client found), a refused request's ``error``, ``exit``.

        For relays that pass the protocol on (a browser, a JSON-lines CLI). Ends
        after the exit; a timed-out exit is yielded, not raised.

        Raises:
            CommandRejectedError: the agent refused the command (``busy``, ``bad_request`` ...).
            CommandTimeoutError: the timeout passed (the command is cancelled).
            ConnectionLostError: the connection dropped and could not be resumed.
        """
        await self.start()
        while not self._done:
            try:
                event = await self._conn._next_event(self._deadline)
            except CommandTimeoutError:
                await self.close()
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

    async def chunks(self) -> AsyncIterator[OutputChunk]:
        """Yield the output as it arrives, until the exit (then in :attr:`exit`).

        Raises:
            CommandRejectedError: the agent refused the command (``busy``, ``bad_request`` ...).
            CommandTimeoutError: the timeout passed (the command is cancelled), or
                the agent's own command timeout ended it.
            ConnectionLostError: the connection dropped and could not be resumed.
        """
        async for event in self.events():
            if isinstance(event, OutputMessage):
                yield OutputChunk(event.stream, event.data, event.seq)
        self._record.check_exit()

    async def result(self) -> CommandResult:
        """Wait for the exit and return it with the output not yet read through :meth:`chunks`.

        Raises:
            The errors of :meth:`chunks`.
        """
        stdout: list[str] = []
        stderr: list[str] = []
        async for chunk in self.chunks():
            (stderr if chunk.stream == "stderr" else stdout).append(chunk.data)
        if self.exit is None:
            raise ConnectionLostError(cause="the command was given up before its exit")
        return CommandResult(
            exit_code=self.exit.code,
            stdout="".join(stdout),
            stderr="".join(stderr),
            duration_ms=self.exit.duration_ms,
        )

    async def cancel(self) -> None:
        """Ask the agent to stop the command (SIGTERM, then SIGKILL); the exit still arrives."""
        await self.start()
        await self._conn._conv_cancel(self.id)

    async def write(self, data: str) -> None:
        """Send ``data`` to the command's stdin (started with ``stdin=True`` or a tty).

        Raises:
            CommandRejectedError: the command reads no stdin, stdin is closed, or the
                agent refused an earlier write.
        """
        await self.start()
        self._record.raise_refusal()
        await self._conn._request(self.id, lambda conv: conv.write_stdin(data))

    async def eof(self) -> None:
        """Close the command's stdin (end of input)."""
        await self.start()
        self._record.raise_refusal()
        await self._conn._request(self.id, lambda conv: conv.close_stdin())

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the command's terminal (a ``tty`` command gets SIGWINCH)."""
        await self.start()
        self._record.raise_refusal()
        await self._conn._request(self.id, lambda conv: conv.resize(cols, rows))


class AsyncSessionConnection:
    """An open WebSocket to one session's agent. Use :meth:`open`.

    One task reads at a time (a command's ``chunks``, ``run``, ``stream``,
    ``ping``); :meth:`cancel` may be awaited from another task while a command
    streams.

    Args:
        ws: a connected ``websockets`` client connection.
        url: the URL it was opened with (for messages).
        conversation: the conversation that will receive (or received) the welcome.
        reopen: opens a new connection to the same URL with the same token, for
            resuming a command after a drop; None disables resume.
        resume: the retry policy of resuming.
    """

    def __init__(
        self,
        ws: ClientConnection,
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
        self._conv = conversation or Conversation()
        self._send_lock = asyncio.Lock()

    # --- opening ------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        token_in_subprotocol: bool = False,
        resume: Backoff | None = RESUME_BACKOFF,
    ) -> AsyncSessionConnection:
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

        async def reopen() -> ClientConnection:
            return await _open_socket(url, shown, token, timeout, token_in_subprotocol)

        ws = await reopen()
        connection = cls(
            ws,
            shown,
            reopen=reopen if resume is not None else None,
            resume=resume or RESUME_BACKOFF,
        )
        try:
            await connection._read_frame(time.monotonic() + timeout)
        except CommandTimeoutError:
            await connection.close()
            raise no_welcome(shown, timeout) from None
        except BaseException:
            await connection.close()
            raise
        return connection

    # --- context manager ------------------------------------------------------------
    async def __aenter__(self) -> AsyncSessionConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the WebSocket (a v1.1 agent keeps a running command until its detach timeout)."""
        self._reopen = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._ws.close()

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
    ) -> AsyncCommand:
        """Return the handle of a command, sent when the handle is first used.

        ``async with conn.command(...) as cmd`` sends it on entry; ``await
        conn.command(...)`` runs it to its result; ``async for chunk in
        conn.command(...)`` streams it. Before sending, it waits for the
        session's initial command and for a command given up on earlier, so the
        new one is not refused as busy.

        Args:
            command: a command line (``"info domain"``, split by the agent) or an argv list.
            stdin: the command reads what :meth:`AsyncCommand.write` sends.
            tty: ``(cols, rows)``: run it under a pseudo-terminal of that size.
            timeout: seconds for the whole command; on expiry it is cancelled.

        Raises:
            CommandRejectedError: ``busy``, a command is still in flight here.
            CommandTimeoutError: the initial command was still running at the timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        size = TtySize(cols=tty[0], rows=tty[1]) if tty is not None else None
        command_id = self._conv.new_id()

        async def send() -> None:
            await self._prepare(deadline)
            self._conv.start_command(command, stdin=stdin, tty=size, command_id=command_id)
            self.last_exit = None
            await self._flush()

        return AsyncCommand(self, command_id, timeout, deadline, send)

    def attach(
        self, command_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> AsyncCommand:
        """Follow a command of this session (any client's): replay after ``after_seq``, then live.

        The ``attach`` is sent when the handle is first used (as :meth:`command`).

        Args:
            command_id: the command's id (``welcome.commands`` lists the current and last).
            after_seq: the last seq already seen; 0 replays everything retained.
            timeout: seconds to follow it; on expiry it is cancelled.

        Raises:
            CommandRejectedError: from the handle: ``bad_request`` for an unknown id.
        """

        async def send() -> None:
            self._conv.attach(command_id, after_seq)
            self.last_exit = None
            await self._flush()

        return AsyncCommand(self, command_id, timeout, starter=send)

    async def run(
        self, command: str | Sequence[str], *, timeout: float | None = None
    ) -> CommandResult:
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
        async with self.command(command, timeout=timeout) as cmd:
            return await cmd.result()

    async def stream(
        self, command: str | Sequence[str], *, timeout: float | None = None
    ) -> AsyncIterator[OutputChunk]:
        """Run a command and yield its output chunks as they arrive.

        The exit is stored in :attr:`last_exit` when the iterator ends; closing
        the iterator early (``aclose()``, ``contextlib.aclosing``) cancels the command.

        Args:
            command: a command line or an argv list.
            timeout: seconds for the whole command; on expiry it is cancelled.

        Raises:
            The same errors as :meth:`run`.
        """
        async with self.command(command, timeout=timeout) as cmd:
            async for chunk in cmd.chunks():
                yield chunk

    async def wait_for_initial(self, timeout: float | None = None) -> InitialCommand | None:
        """Wait until the session's initial command has exited, and return it.

        A session created with a command (``SESSION_COMMAND``) runs it first; a
        command sent meanwhile would be refused as busy, so :meth:`command`
        waits here first.

        Args:
            timeout: seconds to wait; None waits as long as the command runs.

        Raises:
            CommandTimeoutError: it was still running after ``timeout``.
        """
        await self._await_initial(None if timeout is None else time.monotonic() + timeout)
        return self.initial

    async def cancel(self) -> None:
        """Ask the agent to stop the running command (the exit still arrives)."""
        await self._conv_cancel(None)

    async def ping(self, timeout: float = 5.0) -> float:
        """Send a protocol ping and return the round trip in seconds.

        Messages that arrive meanwhile are kept for the command that reads next.

        Args:
            timeout: seconds to wait for the pong.

        Raises:
            CommandTimeoutError: no pong in time.
            ConnectionLostError: the connection closed.
        """
        started = time.monotonic()
        ping_id = self._conv.ping()
        await self._flush()
        deadline = started + timeout
        while not self._conv.ping_answered(ping_id):
            try:
                await self._read_frame(deadline)
            except CommandTimeoutError:
                raise CommandTimeoutError(f"No pong within {timeout}s", cause=self.url) from None
        return time.monotonic() - started

    # --- for AsyncCommand ---------------------------------------------------------------
    async def _conv_cancel(self, command_id: str | None) -> None:
        self._conv.cancel(command_id)
        await self._flush()

    def _abandon(self, command_id: str) -> None:
        if self._conv.current_id == command_id:
            self._conv.abandon()

    def _forget(self, command_id: str) -> None:
        """A command ended in an error: nothing of it is awaited any more."""
        if self._conv.current_id == command_id:
            self._conv.drop()

    async def _request(self, command_id: str, queue: Callable[[Conversation], None]) -> None:
        if self._conv.current_id != command_id:
            raise CommandRejectedError("the command has ended", code="bad_request")
        queue(self._conv)
        await self._flush()

    async def _next_event(self, deadline: float | None) -> Event:
        """Return the next command event, reading (and resuming) as needed."""
        while True:
            event = self._conv.next_event()
            if event is not None:
                return event
            await self._read_frame(deadline)

    # --- internals --------------------------------------------------------------------
    async def _prepare(self, deadline: float | None) -> None:
        """Before a command: settle an abandoned one, wait for the initial one."""
        if self._conv.settling:
            settle = time.monotonic() + SETTLE_TIMEOUT_S
            with contextlib.suppress(CommandTimeoutError):
                while self._conv.settling:
                    await self._read_frame(settle)
        await self._await_initial(deadline)

    async def _await_initial(self, deadline: float | None) -> None:
        try:
            while self._conv.initial_pending:
                await self._read_frame(deadline)
        except CommandTimeoutError:
            raise CommandTimeoutError(
                "The session's initial command is still running",
                hint="wait for it, or give the command a longer timeout",
            ) from None

    async def _flush(self) -> None:
        """Send what the conversation queued, in order."""
        async with self._send_lock:
            frames = self._conv.data_to_send()
            for sent, frame in enumerate(frames):
                try:
                    await self._ws.send(frame)
                except (OSError, WebSocketException) as exc:
                    self._conv.unsent(frames[sent:])
                    raise ConnectionLostError(cause=f"send failed: {type(exc).__name__}") from None

    async def _send(self, frame: str) -> None:
        """Send one raw frame (for tests of the agent's refusals)."""
        async with self._send_lock:
            try:
                await self._ws.send(frame)
            except (OSError, WebSocketException) as exc:
                raise ConnectionLostError(cause=f"send failed: {type(exc).__name__}") from None

    async def _receive(self, deadline: float | None) -> Event:
        """Return the next event (for tests of the agent's refusals)."""
        return await self._next_event(deadline)

    async def _read_frame(self, deadline: float | None) -> None:
        """Read one frame into the conversation; on a drop, resume or raise."""
        try:
            data = await self._recv(deadline)
        except ConnectionLostError as lost:
            if self._reopen is None or not self._conv.connection_lost():
                raise
            await self._reconnect(lost, deadline)
            return
        self._conv.receive_frame(data)
        await self._flush()

    async def _recv(self, deadline: float | None) -> str | bytes:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise CommandTimeoutError("Timed out waiting for the session")
        try:
            async with asyncio.timeout(remaining):
                return await self._ws.recv()
        except TimeoutError:
            raise CommandTimeoutError("Timed out waiting for the session") from None
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise ConnectionLostError(
                cause=close_reason(rcvd.code, rcvd.reason)
                if rcvd is not None
                else f"{self.url}: the connection dropped",
                hint="the agent stopped, or the proxy closed the connection",
            ) from None
        except (OSError, WebSocketException) as exc:
            raise ConnectionLostError(
                cause=f"{self.url}: {type(exc).__name__}",
                hint="the agent stopped, or the proxy closed the connection",
            ) from None

    async def _reconnect(self, lost: ConnectionLostError, deadline: float | None) -> None:
        """Open a new connection (bounded retries); the next frame read is its welcome."""
        assert self._reopen is not None  # noqa: S101 - checked by the caller
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self._ws.close()
        window_end = time.monotonic() + RESUME_WINDOW_S
        attempt = 0
        while True:
            attempt += 1
            try:
                self._ws = await self._reopen()
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
            await asyncio.sleep(delay)
        raise ConnectionLostError(
            cause=f"{lost.cause}; resuming failed after {attempt} attempts: {failure}",
            hint="the agent stopped, or the proxy cannot reach it",
        ) from failure
