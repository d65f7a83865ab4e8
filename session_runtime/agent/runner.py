"""Run one GAM process and stream its output with backpressure.

The process runs from an argv list (never a shell) as the leader of its own
session and process group, so cancelling reaches anything it spawned; it is
born warm (forked by the zygote) or cold (executed), as the launcher decides,
and behaves the same either way. Each pipe (or, under a terminal, the pty
master) is read in chunks of at most :data:`CHUNK_BYTES`; the next read waits
until the previous chunk was handed to the sink, so a slow client stalls the
pipe and therefore GAM, instead of growing the agent's memory. Bytes are
decoded incrementally (UTF-8, invalid sequences replaced), so a character split
across reads survives and invalid output never raises.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from session_runtime.agent.processes import Child, spawn_cold
from session_runtime.agent.stdio import (
    ChildStdio,
    is_pty_eof,
    open_reader,
    open_writer,
    set_size,
)
from session_runtime.agent.ttyexec import NOT_EXECUTABLE_CODE, not_executable
from session_runtime.protocol import GamMode, Stream, TtySize

if TYPE_CHECKING:
    from session_runtime.agent.launcher import GamLauncher

__all__ = [
    "CHUNK_BYTES",
    "NOT_EXECUTABLE_CODE",
    "CommandRun",
    "OutputSink",
    "RunOutcome",
    "SinkGone",
    "StdinClosed",
]

CHUNK_BYTES = 64 * 1024

OutputSink = Callable[[Stream, str], Awaitable[None]]


class SinkGone(Exception):
    """Raised by a sink whose reader went away; the run then terminates the process."""


class StdinClosed(Exception):
    """The command takes no input, its stdin was closed (EOF sent), or it has ended."""


@dataclass(frozen=True)
class RunOutcome:
    """How a process ended. ``code`` is 128+N when signal N ended it."""

    code: int
    duration_ms: int
    cancelled: bool = False
    timed_out: bool = False
    detached: bool = False
    #: How the process was born.
    gam_mode: GamMode = "cold"


class CommandRun:
    """One process: start it, pump its pipes into a sink, stop it on request.

    Args:
        argv: the full argv, GAM_BIN first.
        sink: awaited with each decoded chunk; raises :class:`SinkGone` when nobody listens.
        env: the process environment.
        cwd: the working directory (GAMCFGDIR, writable).
        kill_grace_s: seconds between SIGTERM and SIGKILL when stopping.
        timeout_s: seconds before the run is stopped as timed out; 0 = none.
        stdin: give the process a pipe for :meth:`write_stdin` instead of ``/dev/null``.
        tty: run under a pseudo-terminal of this size (stdin implied); output
            then reaches the sink as stream ``tty``.
        launcher: how to start the process (warm or cold); cold exec when None.
    """

    def __init__(
        self,
        argv: list[str],
        sink: OutputSink,
        *,
        env: Mapping[str, str],
        cwd: Path,
        kill_grace_s: float,
        timeout_s: float = 0.0,
        stdin: bool = False,
        tty: TtySize | None = None,
        launcher: GamLauncher | None = None,
    ) -> None:
        self.argv = argv
        self.wants_stdin = stdin or tty is not None
        self.tty = tty
        self._launcher = launcher
        self._stdin_open = self.wants_stdin
        self._sink = sink
        self._env = dict(env)
        self._cwd = cwd
        self._grace = kill_grace_s
        self._timeout = timeout_s
        self._proc: Child | None = None
        self._stdio: ChildStdio | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stop_reason: str | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._detached = False
        #: Set once the process exists, or once it is known it never will.
        self.spawned = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self._proc.pid if self._proc else None

    async def write_stdin(self, data: str) -> None:
        """Write ``data`` (UTF-8) to the process's stdin, waiting while its pipe is full.

        Under a terminal the bytes are typed into it: ``\\x03`` raises SIGINT in
        the foreground process group, as a keyboard's Ctrl-C does.

        Raises:
            StdinClosed: the command takes no input, EOF was sent, or it ended.
        """
        proc, writer = self._proc, self._writer
        if not self._stdin_open or proc is None or writer is None or proc.returncode is not None:
            raise StdinClosed("this command's input is closed")
        try:
            writer.write(data.encode("utf-8", "replace"))
            await writer.drain()
        except OSError as exc:  # BrokenPipeError, ConnectionResetError, EIO of a pty
            self._stdin_open = False
            raise StdinClosed("the command closed its input") from exc

    def close_stdin(self) -> None:
        """Send EOF: close the stdin pipe, or type the terminal's EOF character (^D).

        A terminal's EOF ends input only at the start of a line, as on a keyboard.

        Raises:
            StdinClosed: the command takes no input, or EOF was already sent.
        """
        writer, stdio = self._writer, self._stdio
        if not self._stdin_open or writer is None or stdio is None:
            raise StdinClosed("this command's input is closed")
        self._stdin_open = False
        if stdio.tty:
            with contextlib.suppress(OSError):
                writer.write(stdio.eof_char())
        else:
            writer.close()

    def resize(self, cols: int, rows: int) -> None:
        """Set the pseudo-terminal's size; the kernel sends SIGWINCH to its foreground group.

        A resize before the process started sets the size it starts with; after it
        ended, it does nothing.

        Raises:
            ValueError: the command does not run under a terminal.
        """
        if self.tty is None:
            raise ValueError("this command does not run under a terminal")
        self.tty = TtySize(cols=cols, rows=rows)
        stdio = self._stdio
        if stdio is not None and self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError):
                set_size(stdio.stdout, cols, rows)

    def stop(self, reason: str = "cancelled") -> None:
        """Ask the process to end: SIGTERM to its group, SIGKILL after the grace period.

        Args:
            reason: ``cancelled``, ``timed_out`` or ``detached``; the first one wins.
        """
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._proc is not None and self._stopper is None and self._proc.returncode is None:
            self._stopper = asyncio.get_running_loop().create_task(self._terminate(self._proc))

    async def _terminate(self, proc: Child) -> None:
        self._signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self._grace)
        except TimeoutError:
            self._signal(proc, signal.SIGKILL)

    @staticmethod
    def _signal(proc: Child, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def _emit(self, stream: Stream, text: str) -> None:
        if self._detached or not text:
            return
        try:
            await self._sink(stream, text)
        except SinkGone:
            self._detached = True
            self.stop("detached")

    async def _pump(self, reader: asyncio.StreamReader, stream: Stream) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                chunk = await reader.read(CHUNK_BYTES)
            except OSError as exc:
                if not is_pty_eof(exc):  # EIO: every slave fd closed, the terminal's EOF
                    raise
                chunk = b""
            if not chunk:
                break
            await self._emit(stream, decoder.decode(chunk))
        await self._emit(stream, decoder.decode(b"", final=True))

    def _outcome(self, code: int, started: float, mode: GamMode) -> RunOutcome:
        return RunOutcome(
            code,
            _ms_since(started),
            cancelled=self._stop_reason == "cancelled",
            timed_out=self._stop_reason == "timed_out",
            detached=self._stop_reason == "detached",
            gam_mode=mode,
        )

    async def _open(self) -> tuple[ChildStdio, list[tuple[asyncio.StreamReader, Stream]]]:
        """Create the fds and the agent's transports on them, before the child exists."""
        stdio = (
            ChildStdio.terminal(self.tty)
            if self.tty is not None
            else ChildStdio.pipes(stdin=self.wants_stdin)
        )
        self._stdio = stdio
        ends: list[tuple[int, Stream]] = (
            [(stdio.stdout, "tty")]
            if stdio.stderr is None
            else [(stdio.stdout, "stdout"), (stdio.stderr, "stderr")]
        )
        pumps: list[tuple[asyncio.StreamReader, Stream]] = []
        transports: list[asyncio.ReadTransport] = []
        try:
            for fd, stream in ends:
                reader, transport = await open_reader(fd, CHUNK_BYTES)
                transports.append(transport)
                pumps.append((reader, stream))
            if stdio.stdin is not None:
                self._writer = await open_writer(stdio.stdin)
        except BaseException:
            for transport in transports:
                transport.close()
            stdio.close_all(except_fds={fd for fd, _ in ends[: len(transports)]})
            raise
        return stdio, pumps

    async def _spawn(self, stdio: ChildStdio) -> tuple[Child, GamMode]:
        if self._launcher is None:
            return await spawn_cold(self.argv, env=self._env, cwd=self._cwd, stdio=stdio), "cold"
        return await self._launcher.spawn(self.argv, env=self._env, cwd=self._cwd, stdio=stdio)

    async def run(self) -> RunOutcome:
        """Start the process, stream it to the end and return how it ended."""
        try:
            return await self._run()
        finally:
            self.spawned.set()

    async def _run(self) -> RunOutcome:
        started = time.monotonic()
        if self._stop_reason is not None:  # stopped while waiting for its turn
            return RunOutcome(
                128 + signal.SIGTERM,
                0,
                cancelled=self._stop_reason == "cancelled",
                detached=self._stop_reason == "detached",
            )
        stdio, pumps = await self._open()
        try:
            try:
                proc, mode = await self._spawn(stdio)
            finally:
                stdio.close_child_ends()
        except OSError as exc:
            self._stdin_open = False
            if self._writer is not None:
                self._writer.close()
            # Nobody holds the other ends any more: the pumps see EOF and close their fds.
            await asyncio.gather(*(self._pump(reader, stream) for reader, stream in pumps))
            await self._emit("stderr", not_executable(self.argv[0], exc))
            return RunOutcome(NOT_EXECUTABLE_CODE, _ms_since(started))
        self._proc = proc
        self.spawned.set()
        if self._stop_reason is not None:  # stopped while it was being born
            self.stop(self._stop_reason)
        timer = None
        if self._timeout > 0:
            timer = asyncio.get_running_loop().call_later(self._timeout, self.stop, "timed_out")
        try:
            await asyncio.gather(*(self._pump(reader, stream) for reader, stream in pumps))
            returncode = await proc.wait()
        except asyncio.CancelledError:
            self._signal(proc, signal.SIGKILL)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._stdin_open = False
            if self._writer is not None:
                self._writer.close()
        if self._stopper is not None:
            self._stopper.cancel()
        if getattr(proc, "status_lost", False):
            await self._emit(
                "stderr",
                "gamgui: the GAM zygote ended during this command; its exit status is unknown\n",
            )
        code = returncode if returncode >= 0 else 128 - returncode
        return self._outcome(code, started, mode)


def _ms_since(started: float) -> int:
    return max(0, int((time.monotonic() - started) * 1000))
