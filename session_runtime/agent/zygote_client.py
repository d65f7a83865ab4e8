"""The agent's handle on its GAM zygote: start it, ask it to fork, learn how children end.

All I/O is on the event loop (a non-blocking SOCK_SEQPACKET socket watched with
``add_reader``), so the agent never blocks on the zygote. Each forked command is
a :class:`WarmChild`, shaped like ``asyncio.subprocess.Process`` (``pid``,
``returncode``, ``wait()``), so the runner treats warm and cold alike. If the
zygote dies while a command runs, that command keeps streaming and its end is
seen through a pidfd. The agent is a subreaper (:mod:`~session_runtime.agent.reaper`),
so the command is now the agent's child and its real exit status is read there.
Only where the agent is not its parent (not a subreaper) is the status, which
only the zygote could read, reported as :data:`LOST_STATUS_CODE` with a line on
stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from session_runtime.agent import reaper
from session_runtime.agent import zygote as wire

__all__ = ["LOST_STATUS_CODE", "WarmChild", "ZygoteGone", "ZygoteProcess"]

#: Exit code of a warm command whose zygote died before reporting its status.
LOST_STATUS_CODE = 255
#: Seconds the zygote may take to import GAM on a busy machine.
READY_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 5.0


class ZygoteGone(Exception):
    """The zygote is not running (or died before the request was answered)."""


class WarmChild:
    """A command forked by the zygote; ``wait()`` returns a Popen-style return code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.status_lost = False
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        """Wait until the command ended; negative -N when signal N ended it."""
        return await asyncio.shield(self._done)

    def _finish(self, returncode: int) -> None:
        if not self._done.done():
            self.returncode = returncode
            self._done.set_result(returncode)

    def _exited(self, status: int) -> None:
        self._finish(os.waitstatus_to_exitcode(status))

    def _orphaned(self) -> None:
        """The zygote is gone: wait for the process through a pidfd instead."""
        if self._done.done():
            return
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # already gone, and reaped by nobody we know
            self._lose()
            return
        reaper.claim(self.pid)

        def ended() -> None:
            loop.remove_reader(pidfd)
            try:
                self._reap(pidfd)
            finally:
                os.close(pidfd)
                reaper.release(self.pid)

        loop.add_reader(pidfd, ended)

    def _reap(self, pidfd: int) -> None:
        """Read the exit status as the process's new parent, if this process is that."""
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # not re-parented to us: no subreaper here
            info = None
        if info is None:
            self._lose()
        elif info.si_code == os.CLD_EXITED:
            self._finish(info.si_status)
        else:  # killed or dumped: Popen-style -N
            self._finish(-info.si_status)

    def _lose(self) -> None:
        self.status_lost = True
        self._finish(LOST_STATUS_CODE)


class ZygoteProcess:
    """A running zygote; build it with :meth:`start`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        sock: socket.socket,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.process = process
        self._on_lost = on_lost
        self.pid = process.pid
        self._sock = sock
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[WarmChild]] = {}
        self._children: dict[int, WarmChild] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.alive = True
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    @classmethod
    async def start(
        cls,
        interpreter: str,
        entry: str,
        *,
        env: Mapping[str, str],
        cwd: Path,
        ready_timeout_s: float = READY_TIMEOUT_S,
        on_lost: Callable[[], None] | None = None,
    ) -> ZygoteProcess:
        """Start ``interpreter -P -m session_runtime.agent.zygote ENTRY FD`` and await ready.

        Args:
            interpreter: the Python that GAM_BIN's shebang names.
            entry: ``module:function`` to import once and call in each child.
            env: the zygote's environment (the session's GAM environment).
            cwd: its working directory.
            ready_timeout_s: how long importing may take.
            on_lost: called once if it dies after being ready (not after :meth:`close`).

        Raises:
            ZygoteGone: it exited, or could not import ``entry``, before ready.
            TimeoutError: it did not get ready in time (it is killed).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                interpreter,
                "-P",
                "-m",
                "session_runtime.agent.zygote",
                entry,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = cls(process, ours, on_lost)
        try:
            await asyncio.wait_for(asyncio.shield(zygote._ready), ready_timeout_s)
        except BaseException:
            await zygote.close()
            raise
        return zygote

    # --- requests ---------------------------------------------------------------
    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        fds: list[int],
        tty: bool,
    ) -> WarmChild:
        """Fork a child running ``argv`` with ``fds`` as its stdin/stdout/stderr.

        Raises:
            ZygoteGone: the zygote is not running; the command did not start.
            OSError: the zygote could not fork, or the request was too large.
        """
        if not self.alive:
            raise ZygoteGone("the zygote has ended")
        rid = next(self._ids)
        request = {"id": rid, "argv": argv, "env": dict(env), "cwd": str(cwd), "tty": tty}
        future: asyncio.Future[WarmChild] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self._send(wire.encode(request), fds)
            return await asyncio.shield(future)
        finally:
            self._pending.pop(rid, None)

    async def _send(self, data: bytes, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self._sock, [data], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self._sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self._sock.fileno())
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._lost()
                raise ZygoteGone("the zygote has ended") from exc

    # --- replies ------------------------------------------------------------------
    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(wire.MAX_MESSAGE_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            with contextlib.suppress(ValueError):
                self._dispatch(wire.decode(data))

    def _dispatch(self, reply: dict[str, Any]) -> None:
        if "ready" in reply:
            if reply["ready"] is True:
                _resolve(self._ready, None)
            else:
                _fail(self._ready, ZygoteGone(str(reply.get("error", "not ready"))))
            return
        rid, pid = reply.get("id"), reply.get("pid")
        if "status" in reply and isinstance(pid, int):
            child = self._children.pop(pid, None)
            if child is not None:
                child._exited(int(reply["status"]))
            return
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is None:
            return
        if isinstance(pid, int):
            child = WarmChild(pid)
            self._children[pid] = child
            _resolve(future, child)
        else:
            code = reply.get("errno")
            _fail(future, OSError(code if isinstance(code, int) else 0, str(reply.get("error"))))

    def _lost(self, *, notify: bool = True) -> None:
        if not self.alive:
            return
        self.alive = False
        was_ready = self._ready.done() and self._ready.exception() is None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._sock.close()
        _fail(self._ready, ZygoteGone("the zygote ended before it was ready"))
        for future in self._pending.values():
            _fail(future, ZygoteGone("the zygote ended before starting the command"))
        for child in self._children.values():
            child._orphaned()
        self._children.clear()
        if notify and was_ready and self._on_lost is not None:
            loop.call_soon(self._on_lost)

    async def close(self) -> None:
        """Stop the zygote: closing its socket ends it; SIGKILL if it lingers."""
        self._lost(notify=False)
        try:
            await asyncio.wait_for(self.process.wait(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


def _resolve(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # retrieved: nobody may be waiting any more
