"""One command as clients see it: its numbered messages, its replay buffer, who follows it.

The runner's output goes to :meth:`LiveCommand.publish`, which numbers it and
keeps it in the command's :class:`~session_runtime.agent.replay.ReplayRing`;
every attached connection has its own sender task reading from that ring at
its own pace, so all of them get every message exactly once and in order.

Pace, decided here:

* **Attached**: the command advances at the speed of its *fastest* attached
  reader (publish waits until one of them is within :data:`READER_WINDOW`
  frames of the newest). One slow reader therefore still backpressures GAM,
  as in v1; a second reader that lags (or never reads) stalls nobody: it keeps
  reading from the ring, and when it falls further behind than the ring holds
  it gets a ``gap`` naming exactly what it missed, then the rest.
* **Detached** (nobody attached): publish never waits; the ring drops its
  oldest frames, so GAM is never stalled by a reader that is not there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.replay import ReplayRing
from session_runtime.agent.runner import RunOutcome, SinkGone
from session_runtime.protocol import (
    CommandState,
    CommandSummary,
    ExitMessage,
    GapMessage,
    OutputMessage,
    StartedMessage,
    Stream,
    TtySize,
    encode,
)

__all__ = ["READER_WINDOW", "LiveCommand", "Send", "Signal", "frame"]

#: Sends one text frame (UTF-8 bytes); raises :class:`SinkGone` when the peer is gone.
Send = Callable[[bytes], Awaitable[None]]

#: Frames the fastest attached reader may trail the newest before publish waits.
READER_WINDOW = 4
#: Frames a sender takes from the ring per read.
_BATCH = 64


def frame(message: BaseModel) -> bytes:
    """Return the UTF-8 text frame of a protocol message."""
    return encode(message).encode("utf-8")


class Signal:
    """Wakes every current waiter on :meth:`fire` (an Event that rearms itself)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake everyone waiting now; later waiters wait for the next fire."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        """Return at the next :meth:`fire`."""
        await self._event.wait()


@dataclass(eq=False)
class _Subscriber:
    key: object
    send: Send
    after_seq: int
    #: The last seq (or gap end) this reader has been sent.
    cursor: int
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class LiveCommand:
    """A command's messages and its readers.

    Args:
        command_id: the id echoed on every message.
        argv: GAM's arguments.
        replay_bytes: the replay buffer's byte bound.
        initial: it is the session's initial command.
        stdin: it reads client input.
        tty: its terminal size, when it runs under a pseudo-terminal.
        started_by: the connection that started it (None for the initial command).
        on_readers_changed: called whenever a reader attaches or goes.
    """

    def __init__(
        self,
        command_id: str,
        argv: list[str],
        *,
        replay_bytes: int,
        initial: bool = False,
        stdin: bool = False,
        tty: TtySize | None = None,
        started_by: ClientInfo | None = None,
        on_readers_changed: Callable[[LiveCommand], None] | None = None,
    ) -> None:
        self.info = CommandInfo(
            command_id=command_id,
            argv=tuple(argv),
            initial=initial,
            tty=tty is not None,
            stdin=stdin or tty is not None,
            started_by=started_by,
        )
        self.ring = ReplayRing(replay_bytes)
        self.started_frame = frame(
            StartedMessage(
                id=command_id, argv=argv, initial=initial, stdin=self.info.stdin, tty=tty
            )
        )
        self.finished = False
        #: UTF-8 bytes of output produced so far.
        self.bytes_out = 0
        self._readers: dict[object, _Subscriber] = {}
        self._new_frame = Signal()
        self._progress = Signal()
        self._on_readers_changed = on_readers_changed

    @property
    def id(self) -> str:
        """The command's id."""
        return self.info.command_id

    @property
    def state(self) -> CommandState:
        """``running`` until its ``exit`` is published, then ``finished``."""
        return "finished" if self.finished else "running"

    @property
    def last_seq(self) -> int:
        """The newest seq produced (the ``exit``'s once finished)."""
        return self.ring.last_seq

    @property
    def readers(self) -> int:
        """How many connections are attached."""
        return len(self._readers)

    def summary(self) -> CommandSummary:
        """Describe the command for ``welcome.commands``."""
        return CommandSummary(
            id=self.id,
            state=self.state,
            last_seq=self.last_seq,
            initial=self.info.initial,
            tty=self.info.tty,
        )

    # --- producing --------------------------------------------------------------
    async def publish(self, stream: Stream, data: str) -> None:
        """Number and keep one output chunk, then wait for the fastest reader (the sink)."""
        if self.finished:
            return
        self.bytes_out += len(data) if data.isascii() else len(data.encode("utf-8"))
        message = OutputMessage(
            id=self.id, stream=stream, data=data, initial=self.info.initial, seq=self.ring.next_seq
        )
        self.ring.append(frame(message))
        self._new_frame.fire()
        while self._readers and self._lead() < self.ring.last_seq - READER_WINDOW:
            await self._progress.wait()

    def finish(self, outcome: RunOutcome) -> None:
        """Publish the ``exit`` (the last seq); readers get it, then their attachment ends."""
        if self.finished:
            return
        message = ExitMessage(
            id=self.id,
            code=outcome.code,
            duration_ms=outcome.duration_ms,
            cancelled=outcome.cancelled or outcome.detached,
            timed_out=outcome.timed_out,
            initial=self.info.initial,
            seq=self.ring.next_seq,
        )
        self.ring.append(frame(message))
        self.finished = True
        self._new_frame.fire()

    async def drained(self) -> None:
        """Return once every reader has been sent everything (after :meth:`finish`)."""
        while self._readers:
            await self._progress.wait()

    def _lead(self) -> int:
        return max(reader.cursor for reader in self._readers.values())

    # --- readers ----------------------------------------------------------------
    def attach(self, key: object, send: Send, after_seq: int = 0) -> None:
        """Send ``started``, then every message with ``seq > after_seq``, then the live ones.

        A second attach of the same ``key`` replaces the first (from the new
        ``after_seq``).

        Args:
            key: the connection.
            send: sends one frame to it.
            after_seq: the last seq it has.

        Raises:
            ValueError: ``after_seq`` is beyond the command's last seq.
        """
        if after_seq > self.last_seq:
            raise ValueError(
                f"after_seq {after_seq} is beyond the last seq {self.last_seq} of command "
                f"{self.id!r}"
            )
        self._cancel(key)
        reader = _Subscriber(key, send, after_seq, after_seq)
        self._readers[key] = reader
        reader.task = asyncio.get_running_loop().create_task(self._pump(reader))
        self._readers_changed()

    def detach(self, key: object) -> None:
        """Stop sending to ``key`` (its connection went away)."""
        if self._cancel(key):
            self._readers_changed()

    def _cancel(self, key: object) -> bool:
        reader = self._readers.pop(key, None)
        if reader is None:
            return False
        if reader.task is not None:
            reader.task.cancel()
        self._progress.fire()
        return True

    def _readers_changed(self) -> None:
        if self._on_readers_changed is not None:
            self._on_readers_changed(self)

    async def _pump(self, reader: _Subscriber) -> None:
        try:
            await reader.send(self.started_frame)
            while True:
                gap, frames = self.ring.read(reader.cursor, _BATCH)
                if gap is not None:
                    await reader.send(
                        frame(
                            GapMessage(
                                id=self.id,
                                from_seq=gap.from_seq,
                                to_seq=gap.to_seq,
                                initial=self.info.initial,
                            )
                        )
                    )
                    reader.cursor = gap.to_seq
                for seq, data in frames:
                    await reader.send(data)
                    reader.cursor = seq
                    self._progress.fire()
                if reader.cursor >= self.ring.last_seq:
                    if self.finished:
                        return
                    await self._new_frame.wait()
        except SinkGone:
            pass
        finally:
            if self._readers.get(reader.key) is reader:
                del self._readers[reader.key]
                self._progress.fire()
                self._readers_changed()
