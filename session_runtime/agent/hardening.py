"""Process hardening the agent applies to itself before it reads its token.

GAM runs under the agent's uid (in a pod, always; on the local stack, as the
session's own user). A same-uid process may read another's
``/proc/<pid>/environ`` and ``/proc/<pid>/mem`` or ptrace it, unless that
process is *non-dumpable*: then only a holder of ``CAP_SYS_PTRACE`` may. So the
agent clears its dumpable flag first thing; the children it starts get the
flag back at ``execve`` and can read only their own memory.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["PR_GET_DUMPABLE", "PR_SET_DUMPABLE", "is_dumpable", "make_undumpable", "prctl"]

#: From <linux/prctl.h>.
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def prctl(option: int, arg: int) -> int:
    """Call Linux's ``prctl(option, arg)``; raise OSError when it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.prctl(option, arg, 0, 0, 0))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed")
    return result


def make_undumpable() -> bool:
    """Clear this process's dumpable flag (Linux); return True when it is cleared.

    Elsewhere (macOS, for a developer's laptop) there is nothing to clear and
    False is returned: same-uid isolation is then not claimed.
    """
    if not sys.platform.startswith("linux"):
        return False
    prctl(PR_SET_DUMPABLE, 0)
    return not is_dumpable()


def is_dumpable() -> bool:
    """Return this process's dumpable flag (True off Linux, where it is not managed)."""
    if not sys.platform.startswith("linux"):
        return True
    return prctl(PR_GET_DUMPABLE, 0) != 0
