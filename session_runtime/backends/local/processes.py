"""Starting, finding and stopping the local stack's processes, and choosing ports.

Every process is started in a new session (its own process group), so stopping
the group also stops what it started (nginx workers, GAM commands). A recorded
pid is trusted only while its kernel start time matches, so a reused pid is
never signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from session_runtime.backends.local.state import ProcessRecord

if TYPE_CHECKING:
    from session_runtime.backends.local.identity import Identity
from session_runtime.errors import BackendUnavailableError

__all__ = [
    "find_system_binary",
    "free_port",
    "is_alive",
    "kill_commands_of",
    "port_is_free",
    "process_start_ticks",
    "spawn",
    "stop",
    "wait_for_port",
]


def find_system_binary(name: str, debian_package: str) -> str:
    """Return a system binary (PATH, then /usr/sbin), or raise with an install hint.

    Args:
        name: the binary, e.g. ``nginx``.
        debian_package: the Debian package that provides it, for the hint.

    Raises:
        BackendUnavailableError: it is not installed.
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise BackendUnavailableError(
            f"{name} is not installed",
            hint=f"install it (Debian/Ubuntu: apt-get install {debian_package}; macOS: "
            f"brew install {name}) or run scripts/bootstrap.sh",
        )
    return found


def process_start_ticks(pid: int) -> int | None:
    """Return the process's start time in clock ticks since boot, or None if it is gone.

    Args:
        pid: the process id.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # a zombie has finished
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(record: ProcessRecord) -> bool:
    """Return True while the recorded process runs (and is the one we started).

    Args:
        record: the process as recorded when it was started.
    """
    _reap(record.pid)
    ticks = process_start_ticks(record.pid)
    if ticks is None:
        return False
    return record.start_ticks is None or ticks == record.start_ticks


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path,
    identity: Identity | None = None,
    stdin_data: bytes | None = None,
    pass_fds: Sequence[int] = (),
) -> ProcessRecord:
    """Start ``argv`` detached in its own process group, output appended to ``log_path``.

    Args:
        argv: the program and its arguments (never a shell).
        env: the complete environment of the new process.
        log_path: file receiving stdout and stderr (created with mode 0600, owned by
            the caller: a process running as ``identity`` writes to it, cannot reopen it).
        cwd: working directory.
        identity: run as this user: ``setgroups([])``, ``setgid``, ``setuid`` (and a
            0077 umask) in the child before ``exec``. None: as the caller.
        stdin_data: bytes the process reads from its stdin (a pipe, closed after them),
            e.g. a secret that must not sit in a file or the environment.
        pass_fds: descriptors the process inherits under the same numbers (e.g. a
            file opened here that its user could not open itself).
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    read_end: int | None = None
    if stdin_data is not None:
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, stdin_data)  # far below the pipe buffer: never blocks
        finally:
            os.close(write_end)
    drop = {}
    if identity is not None:
        drop = {
            "user": identity.uid,
            "group": identity.gid,
            "extra_groups": [],
            "umask": 0o077,
        }
    try:
        process = subprocess.Popen(  # type: ignore[call-overload]
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL if read_end is None else read_end,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            **drop,
        )
    finally:
        os.close(fd)
        if read_end is not None:
            os.close(read_end)
    # The handle is dropped on purpose: the process outlives this call (and, for
    # `local up`, this process). Keep Popen from warning about it.
    process.returncode = 0
    return ProcessRecord(
        pid=process.pid, start_ticks=process_start_ticks(process.pid), argv0=argv[0]
    )


def stop(record: ProcessRecord, *, grace: float = 5.0) -> bool:
    """Stop the process and its group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Args:
        record: the process to stop.
        grace: seconds to wait for a clean exit.

    Returns:
        True if the process is gone afterwards.
    """
    if not is_alive(record):
        # Leftovers of a group whose leader died (a GAM command, an nginx worker).
        # Linux never hands out a pid still used as a group id, so an absent pid
        # means the group is ours or empty; a live pid with another start time is not ours.
        if not Path(f"/proc/{record.pid}").exists():
            _kill_group(record.pid, signal.SIGKILL)
        return True
    _kill_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(record):
            break
        time.sleep(0.02)
    _kill_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not is_alive(record)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group we created (its id is the leader's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_commands_of(gam_config_dir: Path) -> list[int]:
    """SIGKILL what is left of the GAM commands a stopped agent ran; return their pids.

    The agent runs GAM in a process group of its own (so cancelling reaches its
    children); an agent killed outright leaves that group running, orphaned.
    Its processes are found by the ``GAMCFGDIR`` the agent gave them, which is
    unique to the session. Call only once the agent itself is stopped.

    Args:
        gam_config_dir: the session's GAM config directory (its agent's GAMCFGDIR).
    """
    marker = b"\0GAMCFGDIR=" + os.fsencode(gam_config_dir) + b"\0"
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker not in environ:
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                _kill_group(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def port_is_free(host: str, port: int, *, udp: bool = False) -> bool:
    """Return True if ``host:port`` can be bound right now (TCP, and UDP if asked).

    Args:
        host: a loopback address.
        port: the port.
        udp: check UDP too (a DNS server needs both).
    """
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            # As servers bind: TIME_WAIT leftovers of old connections do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """Return a port the kernel considers free on ``host`` (TCP, and UDP if asked).

    Args:
        host: a loopback address.
        udp: the port must also be free for UDP.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if not udp or port_is_free(host, port, udp=True):
            return port
    raise OSError(f"no free port on {host}")


def wait_for_port(host: str, port: int, record: ProcessRecord, timeout: float) -> bool:
    """Wait until something accepts TCP connections on ``host:port`` while ``record`` runs.

    Args:
        host: address to connect to.
        port: port to connect to.
        record: the process expected to listen; waiting stops if it exits.
        timeout: seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(record):
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False
