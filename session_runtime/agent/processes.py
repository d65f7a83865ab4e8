"""A started command, warm or cold, and how a cold one is started.

:class:`Child` is the part of ``asyncio.subprocess.Process`` the runner uses;
the zygote's :class:`~session_runtime.agent.zygote_client.WarmChild` has the
same shape. A cold command is GAM_BIN executed directly (never a shell) as the
leader of a new session; under a terminal it goes through the
:mod:`~session_runtime.agent.ttyexec` shim, which makes the pty its
controlling terminal before exec (no ``preexec_fn`` in a threaded agent).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from session_runtime.agent.stdio import ChildStdio

__all__ = ["TTYEXEC", "Child", "spawn_cold"]

#: The exec shim for cold terminal commands.
TTYEXEC = Path(__file__).with_name("ttyexec.py")


class Child(Protocol):
    """A running command: its pid (leader of its own process group) and its end."""

    @property
    def pid(self) -> int:
        """The process id; also its process group and session id."""

    @property
    def returncode(self) -> int | None:
        """None while it runs; then the exit code, or -N when signal N ended it."""

    async def wait(self) -> int:
        """Wait for the end and return :attr:`returncode`."""


async def spawn_cold(
    argv: list[str], *, env: Mapping[str, str], cwd: Path, stdio: ChildStdio
) -> asyncio.subprocess.Process:
    """Execute ``argv`` with ``stdio``'s child fds in a new session.

    Raises:
        OSError: ``argv[0]`` cannot be executed (without a terminal; the shim
            reports that case on the terminal with exit code 127).
    """
    if stdio.tty:
        argv = [sys.executable, "-I", "-S", str(TTYEXEC), *argv]
        fds = [stdio.child[0]] * 3
    else:
        fds = stdio.child
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=fds[0],
        stdout=fds[1],
        stderr=fds[2],
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
