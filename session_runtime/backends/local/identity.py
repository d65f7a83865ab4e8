"""Unix identities of the local stack: one user per session, one for nginx and dnsmasq.

Run as root, the stack gives every session a system user of its own (named
``gamgui-s-<hash of state dir and session id>``, uid and gid from
:data:`SESSION_UID_RANGE`), created or reused with ``useradd``/``groupadd``.
The system tools are used rather than a bare ``setuid`` to an unlisted uid so
that the passwd lock serialises allocation across stacks and processes, and
``ps``/``ls -l`` name what they show. The agent is started with
``setgroups([])``/``setgid``/``setuid`` before ``exec`` (``subprocess``'s
``user``/``group``/``extra_groups``) and GAM inherits that identity. nginx
workers and dnsmasq run as :data:`STACK_USER`.

A user can only be separated if it can run the agent and GAM: every directory
down to them must be searchable by others. :func:`blocked_path` finds the first
one that is not (``/root`` is 0700 on most systems).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from session_runtime.backends.local.processes import find_system_binary
from session_runtime.errors import BackendError

__all__ = [
    "SESSION_UID_RANGE",
    "SESSION_USER_PREFIX",
    "STACK_USER",
    "Identity",
    "blocked_path",
    "can_separate_users",
    "ensure_session_user",
    "ensure_stack_user",
    "remove_session_user",
    "script_interpreter",
    "session_user_name",
]

#: uids and gids of session users (useradd's SYS_UID_MIN/MAX and SYS_GID_MIN/MAX).
SESSION_UID_RANGE = range(61000, 62000)
SESSION_USER_PREFIX = "gamgui-s-"
#: The unprivileged user nginx workers and dnsmasq run as.
STACK_USER = "gamgui-stack"
_NOLOGIN = "/usr/sbin/nologin"
_TOOL_TIMEOUT_S = 30


@dataclass(frozen=True)
class Identity:
    """A Unix user the stack runs something as."""

    name: str
    uid: int
    gid: int


def can_separate_users() -> bool:
    """Return True when this process may create users and drop to them (it is root)."""
    return os.geteuid() == 0


def session_user_name(state_root: Path, session_id: str) -> str:
    """Return the session's user name: stable for one stack and id, distinct across stacks.

    Args:
        state_root: the stack's state directory.
        session_id: the session id.
    """
    digest = hashlib.sha256(f"{state_root}\0{session_id}".encode()).hexdigest()
    return SESSION_USER_PREFIX + digest[:12]


def _run(argv: list[str]) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise BackendError(
            f"{Path(argv[0]).name} failed",
            cause=(result.stderr.strip() or result.stdout.strip())[-300:],
            hint="the local stack needs useradd/groupadd (Debian: passwd) to separate sessions",
        )


def _lookup(name: str) -> Identity | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Identity(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _ensure_user(name: str, home: str, *, session_range: bool) -> Identity:
    """Create the system user ``name`` with a same-named group, or reuse it.

    Session users get their uid and gid from :data:`SESSION_UID_RANGE`; the stack
    user from the system's own range, so it never takes a session's place.
    """
    found = _lookup(name)
    if found is not None:
        return found
    argv = [find_system_binary("useradd", "passwd"), "--system", "--user-group"]
    if session_range:
        low, high = SESSION_UID_RANGE.start, SESSION_UID_RANGE.stop - 1
        for key in ("SYS_UID_MIN", "SYS_GID_MIN"):
            argv += ["-K", f"{key}={low}"]
        for key in ("SYS_UID_MAX", "SYS_GID_MAX"):
            argv += ["-K", f"{key}={high}"]
    argv += ["--no-create-home", "--home-dir", home, "--shell", _NOLOGIN, name]
    try:
        _run(argv)
    except BackendError:
        found = _lookup(name)  # created meanwhile by another stack process
        if found is None:
            raise
        return found
    created = _lookup(name)
    if created is None:
        raise BackendError(f"useradd did not create {name}")
    return created


def ensure_session_user(state_root: Path, session_id: str, home: Path) -> Identity:
    """Return the session's user, creating it (and its group) on first use.

    Args:
        state_root: the stack's state directory.
        session_id: the session id.
        home: the session's home (recorded in passwd; created by the caller).

    Raises:
        BackendError: useradd failed, or the name belongs to a uid outside the range.
    """
    identity = _ensure_user(
        session_user_name(state_root, session_id), str(home), session_range=True
    )
    if identity.uid not in SESSION_UID_RANGE or identity.uid == 0:
        raise BackendError(
            f"user {identity.name} exists with uid {identity.uid}, outside the session range",
            hint=f"remove it (userdel {identity.name}); session uids are "
            f"{SESSION_UID_RANGE.start}-{SESSION_UID_RANGE.stop - 1}",
        )
    return identity


def ensure_stack_user() -> Identity:
    """Return :data:`STACK_USER` (nginx workers, dnsmasq), creating it on first use."""
    return _ensure_user(STACK_USER, "/nonexistent", session_range=False)


def remove_session_user(state_root: Path, session_id: str) -> None:
    """Delete the session's user and group, if present (its processes must be gone).

    Args:
        state_root: the stack's state directory.
        session_id: the session id.
    """
    name = session_user_name(state_root, session_id)
    if _lookup(name) is None:
        return
    with contextlib.suppress(BackendError):
        _run([find_system_binary("userdel", "passwd"), name])
    with contextlib.suppress(KeyError, BackendError):
        grp.getgrnam(name)
        _run([find_system_binary("groupdel", "passwd"), name])


def _searchable_by_others(path: Path, *, final: bool) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return bool(mode & stat.S_IXOTH)
    return not final or bool(mode & (stat.S_IROTH | stat.S_IXOTH))


def blocked_path(path: Path | str) -> Path | None:
    """Return the first directory or file that keeps other users from ``path``, or None.

    Every ancestor must be searchable by others, and so must each symlink's
    target, down to the file itself (readable or executable by others).

    Args:
        path: a file a session user must run or read.
    """
    pending = [Path(os.path.abspath(path))]
    seen: set[Path] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        walked = Path("/")
        parts = current.parts[1:]
        for index, part in enumerate(parts):
            walked = walked / part
            if walked.is_symlink():
                target = Path(os.path.join(walked.parent, os.readlink(walked)), *parts[index + 1 :])
                pending.append(Path(os.path.normpath(target)))
            if walked != current and not _searchable_by_others(walked, final=False):
                return walked
        if not _searchable_by_others(current, final=True):
            return current
    return None


def script_interpreter(path: Path | str) -> str | None:
    """Return the interpreter a ``#!`` script names (its first word), or None.

    Args:
        path: an executable.
    """
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words else None
