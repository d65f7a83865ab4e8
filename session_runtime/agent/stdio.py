"""A command's standard streams: pipes or a pseudo-terminal, and their asyncio ends.

The agent creates the fds itself, so a cold ``execve`` and a warm fork from the
zygote receive the same kind of stdin/stdout/stderr and the runner reads them
the same way. With a terminal, the child gets the slave as fds 0-2 and the
agent keeps the master: output is read from it, input and the EOF character
are written to it, and ``TIOCSWINSZ`` on it resizes the terminal (the kernel
then sends SIGWINCH to the terminal's foreground process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import termios
from dataclasses import dataclass, field

from session_runtime.protocol import TtySize

__all__ = ["ChildStdio", "is_pty_eof", "open_reader", "open_writer"]


@dataclass
class ChildStdio:
    """The fds of one command: what the child gets and what the agent keeps.

    ``child`` is ``[stdin, stdout, stderr]`` for pipes, ``[slave]`` for a terminal.
    ``stdout``/``stderr`` are the agent's read ends (``stderr`` is None with a
    terminal, whose master carries both), ``stdin`` the agent's write end or None.
    """

    child: list[int]
    stdout: int
    stderr: int | None
    stdin: int | None
    tty: bool
    _closed_child: bool = field(default=False, repr=False)

    @classmethod
    def pipes(cls, *, stdin: bool) -> ChildStdio:
        """Pipes for stdout and stderr; a pipe or ``/dev/null`` for stdin."""
        opened: list[int] = []
        try:
            if stdin:
                in_r, in_w = os.pipe()
                opened += [in_r, in_w]
            else:
                in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
                opened.append(in_r)
            out_r, out_w = os.pipe()
            opened += [out_r, out_w]
            err_r, err_w = os.pipe()
            opened += [err_r, err_w]
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        return cls([in_r, out_w, err_w], out_r, err_r, in_w if stdin else None, tty=False)

    @classmethod
    def terminal(cls, size: TtySize) -> ChildStdio:
        """A pseudo-terminal of ``size``; the agent writes input to a dup of the master."""
        master, slave = os.openpty()
        try:
            set_size(master, size.cols, size.rows)
            writer = os.dup(master)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        return cls([slave], master, None, writer, tty=True)

    def close_child_ends(self) -> None:
        """Close the agent's copies of the child's fds (after the child has them)."""
        if self._closed_child:
            return
        self._closed_child = True
        for fd in set(self.child):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_all(self, *, except_fds: set[int]) -> None:
        """Close every fd except those handed to a transport (when starting failed)."""
        self.close_child_ends()
        for fd in (self.stdout, self.stderr, self.stdin):
            if fd is not None and fd not in except_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def eof_char(self) -> bytes:
        """The terminal's EOF character (VEOF, normally ^D)."""
        cc = termios.tcgetattr(self.stdout)[6]
        veof = cc[termios.VEOF]
        return veof if isinstance(veof, bytes) else bytes([veof])


def set_size(fd: int, cols: int, rows: int) -> None:
    """Set a terminal's size (``TIOCSWINSZ``); on the master this signals SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def is_pty_eof(exc: BaseException) -> bool:
    """Whether a read error is a pty master's EIO once every slave fd is closed."""
    return isinstance(exc, OSError) and exc.errno == errno.EIO


async def open_reader(fd: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    """Read ``fd`` through an asyncio transport that pauses above ``limit`` buffered bytes.

    The transport owns ``fd`` from now on and closes it at EOF.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0)
    )
    return reader, transport


async def open_writer(fd: int) -> asyncio.StreamWriter:
    """Write ``fd`` through an asyncio transport; ``drain()`` waits while it is full.

    The writer owns ``fd`` from now on; ``close()`` closes it.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(fd, "wb", 0)
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)
