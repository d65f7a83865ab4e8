"""A running command's pending input: written in arrival order by one task, bounded in bytes.

``stdin`` messages from any connection are queued here and written to the
command one after another, in the order the agent received them. The
connection's message loop waits only while more than :data:`INPUT_PENDING_BYTES`
are already waiting (a command that does not read holds a fast writer back),
so a ``cancel`` or ``resize`` right after some typing is never stuck behind a
write into a full pipe or terminal. A write that fails (the command closed
its input or ended) is reported to the connection that sent it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from session_runtime.agent.live import Signal
from session_runtime.agent.runner import CommandRun, StdinClosed
from session_runtime.protocol import MAX_MESSAGE_BYTES

__all__ = ["INPUT_PENDING_BYTES", "InputQueue", "ReportError"]

#: Bytes of input that may wait for the command before a writer is held back.
INPUT_PENDING_BYTES = 4 * MAX_MESSAGE_BYTES

#: Tells the sender of a failed write why; must not raise.
ReportError = Callable[[str], Awaitable[None]]


class InputQueue:
    """The input of one command.

    Args:
        run: the command's process.
        ready: waits until the process exists (input may arrive first).
        limit: bytes that may wait before :meth:`put` holds the writer back.
    """

    def __init__(
        self,
        run: CommandRun,
        ready: Callable[[], Awaitable[None]],
        limit: int = INPUT_PENDING_BYTES,
    ) -> None:
        self._run = run
        self._ready = ready
        self._limit = limit
        self._items: deque[tuple[str | None, int, ReportError]] = deque()
        self._pending = 0
        self._room = Signal()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Bytes waiting to be written."""
        return self._pending

    async def put(self, data: str | None, on_error: ReportError) -> None:
        """Queue ``data`` (None: EOF), waiting while the queue is over its bound.

        Raises:
            StdinClosed: the command ended meanwhile.
        """
        size = 0 if data is None else len(data.encode("utf-8", "replace"))
        while not self._closed and self._pending and self._pending + size > self._limit:
            await self._room.wait()
        if self._closed:
            raise StdinClosed("the command has ended")
        self._items.append((data, size, on_error))
        self._pending += size
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    def close(self) -> None:
        """The command ended: drop what waits, release held writers."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._items.clear()
        self._pending = 0
        self._room.fire()

    async def _drain(self) -> None:
        while self._items:
            item = self._items[0]
            data, size, on_error = item
            try:
                await self._ready()
                if data is None:
                    self._run.close_stdin()
                else:
                    await self._run.write_stdin(data)
            except StdinClosed as exc:
                await on_error(str(exc))
            finally:
                if self._items and self._items[0] is item:  # not cleared by close()
                    self._items.popleft()
                    self._pending -= size
                self._room.fire()
