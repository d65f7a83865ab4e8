"""The agent as its commands' subreaper: what they leave behind is reaped.

In a pod the agent is PID 1, and the kernel makes PID 1 the parent of every
orphan in the container. A PID 1 that never waits collects zombies until the
pid space runs out. Elsewhere the agent asks for the same role over its own
descendants (``PR_SET_CHILD_SUBREAPER``), so both backends behave alike:

- A process a command left behind (a daemon GAM spawned, a child of a batch
  whose parent died) becomes the agent's child. :class:`OrphanReaper` sweeps the
  agent's children :data:`SWEEP_INTERVAL_S` seconds after a child exits
  (``SIGCHLD``), and again while a zombie awaits its second look; an agent whose
  children all behave never scans. It reaps a zombie that was already a zombie
  on the previous sweep and that nobody claimed.
  asyncio's child watcher reaps the agent's own children within milliseconds, so
  a zombie still there a sweep later is one nobody else will reap. Waiting for
  that second sighting keeps the sweep from taking an exit status asyncio is
  about to read.
- A warm command is the zygote's child. If the zygote dies first, the command
  becomes the agent's child, and the agent can read its real exit status
  itself. :mod:`~session_runtime.agent.zygote_client` :func:`claim` s its pid
  and waits on it through its pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from session_runtime.agent.hardening import prctl
from session_runtime.agent.log import log_event

__all__ = [
    "PR_SET_CHILD_SUBREAPER",
    "SWEEP_INTERVAL_S",
    "OrphanReaper",
    "become_subreaper",
    "children",
    "claim",
    "is_zombie",
    "release",
]

#: From <linux/prctl.h>.
PR_SET_CHILD_SUBREAPER = 36
#: Seconds from a child's exit to a sweep, and between the two looks at a zombie:
#: an orphan stays a zombie about twice this long.
SWEEP_INTERVAL_S = 2.0

_claimed: set[int] = set()


def claim(pid: int) -> None:
    """Keep the sweep off ``pid``: its caller waits for it itself."""
    _claimed.add(pid)


def release(pid: int) -> None:
    """Undo :func:`claim` once the caller has waited."""
    _claimed.discard(pid)


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children; True when they are (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    if os.getpid() != 1:  # PID 1 of a pid namespace already is
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    return True


def _stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` after ``(comm)``: state, ppid, ...; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def children() -> set[int]:
    """The pids of this process's children (a scan of ``/proc``).

    ``/proc/<pid>/task/<tid>/children`` would be shorter, but kernels built
    without ``CONFIG_PROC_CHILDREN`` do not have it.
    """
    me = str(os.getpid())
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and fields[1] == me:
                found.add(int(entry.name))
    return found


def is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited and waits to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"


class OrphanReaper:
    """Reaps the zombies nobody else will (see the module doc)."""

    def __init__(self, interval: float = SWEEP_INTERVAL_S) -> None:
        self.interval = interval
        self._seen: set[int] = set()

    def sweep(self) -> list[int]:
        """Reap the unclaimed zombies seen on the last sweep too; return their pids."""
        zombies = {pid for pid in children() - _claimed if is_zombie(pid)}
        reaped = []
        for pid in sorted(zombies & self._seen):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
        self._seen = zombies - set(reaped)
        return reaped

    async def run(self) -> None:
        """Sweep after children exit (in a worker thread: it reads ``/proc``) until cancelled."""
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, exited.set)
        try:
            while True:
                if not self._seen:  # no zombie waits for its second look
                    await exited.wait()
                exited.clear()
                await asyncio.sleep(self.interval)
                reaped = await asyncio.to_thread(self.sweep)
                if reaped:
                    log_event("orphans_reaped", count=len(reaped), pids=reaped)
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)
