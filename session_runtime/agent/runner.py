"""Run one GAM process and stream its output with backpressure.

The process is executed directly from an argv list (never a shell) in its own
process group, so cancelling reaches anything it spawned. Each pipe is read in
chunks of at most :data:`CHUNK_BYTES`; the next read waits until the previous
chunk was handed to the sink, so a slow client stalls the pipe and therefore
GAM, instead of growing the agent's memory. Bytes are decoded incrementally
(UTF-8, invalid sequences replaced), so a character split across reads
survives and invalid output never raises.
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

from session_runtime.protocol import GamMode, Stream, TtySize

if TYPE_CHECKING:
    from session_runtime.agent.launcher import GamLauncher

__all__ = ["CHUNK_BYTES", "CommandRun", "OutputSink", "RunOutcome", "SinkGone", "StdinClosed"]

CHUNK_BYTES = 64 * 1024
#: Exit code reported when GAM_BIN cannot be executed, as a shell would.
NOT_EXECUTABLE_CODE = 127

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
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_reason: str | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._detached = False

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self._proc.pid if self._proc else None

    async def write_stdin(self, data: str) -> None:
        """Write ``data`` (UTF-8) to the process's stdin, waiting while its pipe is full.

        Raises:
            StdinClosed: the command takes no input, EOF was sent, or it ended.
        """
        proc = self._proc
        if (
            not self._stdin_open
            or proc is None
            or proc.stdin is None
            or proc.returncode is not None
        ):
            raise StdinClosed("this command's input is closed")
        try:
            proc.stdin.write(data.encode("utf-8", "replace"))
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._stdin_open = False
            raise StdinClosed("the command closed its input") from exc

    def close_stdin(self) -> None:
        """Send EOF: close the stdin pipe.

        Raises:
            StdinClosed: the command takes no input, or EOF was already sent.
        """
        proc = self._proc
        if not self._stdin_open or proc is None or proc.stdin is None:
            raise StdinClosed("this command's input is closed")
        self._stdin_open = False
        proc.stdin.close()

    def resize(self, cols: int, rows: int) -> None:
        """Set the pseudo-terminal's size and signal the process group (SIGWINCH).

        Raises:
            ValueError: the command does not run under a terminal.
        """
        if self.tty is None:
            raise ValueError("this command does not run under a terminal")
        raise NotImplementedError("terminal commands are not supported yet")

    def stop(self, reason: str = "cancelled") -> None:
        """Ask the process to end: SIGTERM to its group, SIGKILL after the grace period.

        Args:
            reason: ``cancelled``, ``timed_out`` or ``detached``; the first one wins.
        """
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._proc is not None and self._stopper is None and self._proc.returncode is None:
            self._stopper = asyncio.get_running_loop().create_task(self._terminate(self._proc))

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        self._signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self._grace)
        except TimeoutError:
            self._signal(proc, signal.SIGKILL)

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
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
        while chunk := await reader.read(CHUNK_BYTES):
            await self._emit(stream, decoder.decode(chunk))
        await self._emit(stream, decoder.decode(b"", final=True))

    async def run(self) -> RunOutcome:
        """Start the process, stream it to the end and return how it ended."""
        started = time.monotonic()
        if self._stop_reason is not None:  # stopped while waiting for its turn
            return RunOutcome(
                128 + signal.SIGTERM,
                0,
                cancelled=self._stop_reason == "cancelled",
                detached=self._stop_reason == "detached",
            )
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if self.wants_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                limit=CHUNK_BYTES,
            )
        except OSError as exc:
            await self._emit("stderr", f"cannot execute {self.argv[0]}: {exc.strerror}\n")
            return RunOutcome(NOT_EXECUTABLE_CODE, _ms_since(started))
        self._proc = proc
        timer = None
        if self._timeout > 0:
            timer = asyncio.get_running_loop().call_later(self._timeout, self.stop, "timed_out")
        assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPE above
        try:
            await asyncio.gather(
                self._pump(proc.stdout, "stdout"), self._pump(proc.stderr, "stderr")
            )
            returncode = await proc.wait()
        except asyncio.CancelledError:
            self._signal(proc, signal.SIGKILL)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self._stopper is not None:
            self._stopper.cancel()
        code = returncode if returncode >= 0 else 128 - returncode
        return RunOutcome(
            code,
            _ms_since(started),
            cancelled=self._stop_reason == "cancelled",
            timed_out=self._stop_reason == "timed_out",
            detached=self._stop_reason == "detached",
        )


def _ms_since(started: float) -> int:
    return max(0, int((time.monotonic() - started) * 1000))
