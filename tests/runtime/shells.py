"""Both client shells behind one blocking face, so one behavioural suite runs against each.

``SyncShell`` calls :class:`~session_runtime.client.SessionConnection` directly;
``AsyncShell`` runs :class:`~session_runtime.aclient.AsyncSessionConnection` on
an event loop in a thread of its own and waits for each call. Tests speak only
to :class:`Shell`, :class:`Conn` and :class:`Handle`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from session_runtime.aclient import AsyncCommand, AsyncSessionConnection
from session_runtime.client import Command, OutputChunk, SessionConnection
from session_runtime.models import CommandResult
from session_runtime.protocol import ExitMessage, StartedMessage, WelcomeMessage

__all__ = ["AsyncShell", "Conn", "Handle", "Shell", "SyncShell"]

T = TypeVar("T")
#: Bound on every single call into the async loop: a hang fails the test, never stalls it.
CALL_TIMEOUT_S = 120.0


class Handle(Protocol):
    """One command, as both shells' handles allow it to be driven."""

    @property
    def exit(self) -> ExitMessage | None: ...
    @property
    def seq(self) -> int: ...
    def next_chunk(self) -> OutputChunk: ...
    def rest(self) -> list[OutputChunk]: ...
    def result(self) -> CommandResult: ...
    @property
    def id(self) -> str: ...
    @property
    def started(self) -> StartedMessage | None: ...
    @property
    def gaps(self) -> list[tuple[int, int]]: ...
    def cancel(self) -> None: ...
    def leave(self) -> None: ...
    def write(self, data: str) -> None: ...
    def eof(self) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...


class Conn(Protocol):
    """One connection, as both shells allow it to be driven."""

    @property
    def welcome(self) -> WelcomeMessage: ...
    @property
    def last_exit(self) -> ExitMessage | None: ...
    def run(self, command: str | list[str], timeout: float | None = None) -> CommandResult: ...
    def start(
        self,
        command: str | list[str],
        timeout: float | None = None,
        *,
        stdin: bool = False,
        tty: tuple[int, int] | None = None,
    ) -> Handle: ...
    def attach(self, command_id: str, after_seq: int = 0) -> Handle: ...
    def sever(self) -> None: ...
    def stream_some(self, command: str | list[str], count: int) -> list[OutputChunk]: ...
    def ping(self, timeout: float = 5.0) -> float: ...
    def close(self) -> None: ...


class Shell(Protocol):
    name: str

    def open(self, url: str, token: str, **options: Any) -> Conn: ...


# --- sync -----------------------------------------------------------------------------
class _SyncHandle:
    def __init__(self, cmd: Command) -> None:
        self._cmd = cmd.__enter__()
        self._chunks = cmd.chunks()

    @property
    def exit(self) -> ExitMessage | None:
        return self._cmd.exit

    @property
    def seq(self) -> int:
        return self._cmd.seq

    def next_chunk(self) -> OutputChunk:
        return next(self._chunks)

    def rest(self) -> list[OutputChunk]:
        return list(self._chunks)

    def result(self) -> CommandResult:
        return self._cmd.result()

    @property
    def id(self) -> str:
        return self._cmd.id

    @property
    def started(self) -> StartedMessage | None:
        return self._cmd.started

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return self._cmd.gaps

    def cancel(self) -> None:
        self._cmd.cancel()

    def leave(self) -> None:
        self._cmd.__exit__(None, None, None)

    def write(self, data: str) -> None:
        self._cmd.write(data)

    def eof(self) -> None:
        self._cmd.eof()

    def resize(self, cols: int, rows: int) -> None:
        self._cmd.resize(cols, rows)


class _SyncConn:
    def __init__(self, conn: SessionConnection) -> None:
        self.raw = conn

    @property
    def welcome(self) -> WelcomeMessage:
        return self.raw.welcome

    @property
    def last_exit(self) -> ExitMessage | None:
        return self.raw.last_exit

    def run(self, command: str | list[str], timeout: float | None = None) -> CommandResult:
        return self.raw.run(command, timeout=timeout)

    def start(
        self,
        command: str | list[str],
        timeout: float | None = None,
        *,
        stdin: bool = False,
        tty: tuple[int, int] | None = None,
    ) -> Handle:
        return _SyncHandle(self.raw.command(command, timeout=timeout, stdin=stdin, tty=tty))

    def attach(self, command_id: str, after_seq: int = 0) -> Handle:
        return _SyncHandle(self.raw.attach(command_id, after_seq))

    def sever(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self.raw._ws.sock.shutdown(socket.SHUT_RDWR)

    def stream_some(self, command: str | list[str], count: int) -> list[OutputChunk]:
        taken: list[OutputChunk] = []
        chunks: Iterator[OutputChunk] = self.raw.stream(command)
        for chunk in chunks:
            taken.append(chunk)
            if len(taken) == count:
                break
        chunks.close()  # type: ignore[attr-defined]  # a generator
        return taken

    def ping(self, timeout: float = 5.0) -> float:
        return self.raw.ping(timeout)

    def close(self) -> None:
        self.raw.close()


class SyncShell:
    """The websocket-client shell, called directly."""

    name = "sync"

    def open(self, url: str, token: str, **options: Any) -> Conn:
        return _SyncConn(SessionConnection.open(url, token, **options))

    def stop(self) -> None:
        pass


# --- async ----------------------------------------------------------------------------
class _Loop:
    """An event loop running in its own thread; ``call`` waits for one coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT_S)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _collect(chunks: AsyncIterator[OutputChunk]) -> list[OutputChunk]:
    return [chunk async for chunk in chunks]


class _AsyncHandle:
    def __init__(self, loop: _Loop, cmd: AsyncCommand) -> None:
        self._loop = loop
        self._cmd = loop.call(cmd.__aenter__())
        self._chunks = cmd.chunks()

    @property
    def exit(self) -> ExitMessage | None:
        return self._cmd.exit

    @property
    def seq(self) -> int:
        return self._cmd.seq

    def next_chunk(self) -> OutputChunk:
        return self._loop.call(anext_chunk(self._chunks))

    def rest(self) -> list[OutputChunk]:
        return self._loop.call(_collect(self._chunks))

    def result(self) -> CommandResult:
        return self._loop.call(self._await_result())

    async def _await_result(self) -> CommandResult:
        return await self._cmd

    @property
    def id(self) -> str:
        return self._cmd.id

    @property
    def started(self) -> StartedMessage | None:
        return self._cmd.started

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return self._cmd.gaps

    def cancel(self) -> None:
        self._loop.call(self._cmd.cancel())

    def leave(self) -> None:
        self._loop.call(self._cmd.__aexit__(None, None, None))

    def write(self, data: str) -> None:
        self._loop.call(self._cmd.write(data))

    def eof(self) -> None:
        self._loop.call(self._cmd.eof())

    def resize(self, cols: int, rows: int) -> None:
        self._loop.call(self._cmd.resize(cols, rows))


async def anext_chunk(chunks: AsyncIterator[OutputChunk]) -> OutputChunk:
    return await anext(chunks)


class _AsyncConn:
    def __init__(self, loop: _Loop, conn: AsyncSessionConnection) -> None:
        self._loop = loop
        self.raw = conn

    @property
    def welcome(self) -> WelcomeMessage:
        return self.raw.welcome

    @property
    def last_exit(self) -> ExitMessage | None:
        return self.raw.last_exit

    def run(self, command: str | list[str], timeout: float | None = None) -> CommandResult:
        return self._loop.call(self.raw.run(command, timeout=timeout))

    def start(
        self,
        command: str | list[str],
        timeout: float | None = None,
        *,
        stdin: bool = False,
        tty: tuple[int, int] | None = None,
    ) -> Handle:
        return _AsyncHandle(
            self._loop, self.raw.command(command, timeout=timeout, stdin=stdin, tty=tty)
        )

    def attach(self, command_id: str, after_seq: int = 0) -> Handle:
        return _AsyncHandle(self._loop, self.raw.attach(command_id, after_seq))

    def sever(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self._loop.loop.call_soon_threadsafe(self.raw._ws.transport.abort)

    def stream_some(self, command: str | list[str], count: int) -> list[OutputChunk]:
        async def take() -> list[OutputChunk]:
            taken: list[OutputChunk] = []
            chunks = self.raw.stream(command)
            async for chunk in chunks:
                taken.append(chunk)
                if len(taken) == count:
                    break
            await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
            return taken

        return self._loop.call(take())

    def ping(self, timeout: float = 5.0) -> float:
        return self._loop.call(self.raw.ping(timeout))

    def close(self) -> None:
        self._loop.call(self.raw.close())


class AsyncShell:
    """The websockets asyncio shell, on an event loop of its own."""

    name = "async"

    def __init__(self) -> None:
        self._loop = _Loop()

    def open(self, url: str, token: str, **options: Any) -> Conn:
        return _AsyncConn(
            self._loop, self._loop.call(AsyncSessionConnection.open(url, token, **options))
        )

    def stop(self) -> None:
        self._loop.stop()
