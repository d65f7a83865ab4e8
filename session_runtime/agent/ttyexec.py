"""Exec shim for cold terminal commands: take the pty as controlling terminal, then exec.

The agent is threaded (asyncio's child watcher), so it cannot run code between
``fork`` and ``exec`` (no ``preexec_fn``). It starts this file with
``start_new_session=True`` (the child is a session leader with no controlling
terminal) and the pty slave as fds 0-2; the shim claims fd 0 as controlling
terminal (``TIOCSCTTY``), so Ctrl-C typed into the pty raises SIGINT in GAM and
a resize sends it SIGWINCH, and then ``execvp``\\ s GAM. Run as
``python -I -S ttyexec.py ARGV...``: it imports only the standard library.
Warm terminal commands do the same in the zygote's child instead.
"""

from __future__ import annotations

import fcntl
import os
import sys
import termios

__all__ = ["NOT_EXECUTABLE_CODE", "main", "not_executable"]

#: Exit code reported when GAM_BIN cannot be executed, as a shell would.
NOT_EXECUTABLE_CODE = 127


def not_executable(program: str, exc: OSError) -> str:
    """The line a command gets on stderr when its program cannot be executed."""
    return f"cannot execute {program}: {exc.strerror}\n"


def main(argv: list[str]) -> int:
    """Make fd 0 the controlling terminal and exec ``argv``; 127 when that fails."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - argv from the agent, never a shell
    except OSError as exc:
        os.write(2, not_executable(argv[0], exc).encode())
    return NOT_EXECUTABLE_CODE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
