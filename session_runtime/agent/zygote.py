"""The GAM zygote: a single-threaded process that imports GAM once and forks per command.

Run by the launcher as ``python -P -m session_runtime.agent.zygote MODULE:FUNC FD``:
it imports ``MODULE`` (GAM's ``gam.__main__``), says ``ready``, then serves
requests from the agent on the SOCK_SEQPACKET socket ``FD``. A request is one
JSON message (argv, env, cwd, tty) carrying the command's stdin, stdout and
stderr as ``SCM_RIGHTS`` fds (one fd, the pty slave, for a terminal). For each
it forks a child that becomes what a cold ``execve`` of GAM's console script
would have been, and replies with the child's pid at once and with its wait
status when it ends (the agent cannot ``waitpid`` a grandchild).

The parent never runs a command (GAM's parsed config and caches would pin one
command's state), opens no connection and starts no thread, so ``fork`` is safe.
A child only starts once its pid was sent: if the zygote dies in between, the
child sees EOF on its go-pipe and exits without running anything, so a command
the agent falls back to running cold never runs twice.

This module is also imported by the agent for :func:`encode` / :func:`decode`
and the constants; it imports nothing beyond the standard library.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import sys
import termios
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "GAM_ENTRY",
    "MAX_MESSAGE_BYTES",
    "NOT_STARTED_CODE",
    "decode",
    "encode",
    "main",
]

#: GAM's console-script entry point, as ``gam7`` declares it.
GAM_ENTRY = "gam.__main__:main"
#: Largest request or reply (the environment is the big part).
MAX_MESSAGE_BYTES = 1024 * 1024
#: Exit status of a child whose zygote died before it was allowed to start.
NOT_STARTED_CODE = 127
#: Exit status Python uses when flushing stdout at exit fails.
_FLUSH_FAILED_CODE = 120


def encode(message: Mapping[str, object]) -> bytes:
    """Serialise one request or reply."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Parse one request or reply (a JSON object)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a zygote message must be a JSON object")
    return value


def _entry(spec: str) -> Callable[[], object]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    func = getattr(module, attr)
    if not callable(func):
        raise TypeError(f"{spec} is not callable")
    return func  # type: ignore[no-any-return]


class Zygote:
    """The parent: read requests, fork children, report pids and wait statuses.

    Args:
        sock: the agent's end of the socketpair.
        entry: the imported entry point each child calls.
        import_env: variables the entry module set in ``os.environ`` while being
            imported (GAM sets one); children re-apply them over the request's
            environment, as a cold import would.
    """

    def __init__(
        self, sock: socket.socket, entry: Callable[[], object], import_env: dict[str, str]
    ) -> None:
        self.sock = sock
        self.entry = entry
        self.import_env = import_env
        self.children: dict[int, int] = {}  # pid -> request id
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()

    def serve(self) -> int:
        """Serve until the agent closes its end; return the zygote's exit status."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._selector.register(self.sock, selectors.EVENT_READ, "request")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "signal")
        self._send({"ready": True, "pid": os.getpid()})
        while True:
            for key, _ in self._selector.select():
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    self._reap()
                elif not self._request():
                    self._shutdown()
                    return 0

    def _send(self, message: Mapping[str, object]) -> None:
        with contextlib.suppress(OSError):  # the agent went away: _request sees EOF
            self.sock.send(encode(message))

    def _request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE_BYTES, 3)
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = decode(data)
            rid = int(request["id"])
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            self._send({"error": "malformed request"})
            return True
        try:
            self._fork(rid, request, fds)
        except OSError as exc:
            self._send({"id": rid, "error": exc.strerror or str(exc), "errno": exc.errno})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def _fork(self, rid: int, request: dict[str, Any], fds: list[int]) -> None:
        if len(fds) not in (1, 3):
            raise OSError(0, f"expected 1 or 3 fds, got {len(fds)}")
        led_r, led_w = os.pipe()  # child -> parent: "I lead my own session now"
        go_r, go_w = os.pipe()  # parent -> child: "your pid is reported, start"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured by the agent tests
            os.close(go_w)
            os.close(led_r)
            self._become_child(request, fds, go_r, led_w)
        os.close(go_r)
        os.close(led_w)
        # Report the pid only once it names a process group, so a cancel that
        # follows at once (killpg) cannot miss the child.
        with contextlib.suppress(OSError):
            os.read(led_r, 1)
        os.close(led_r)
        self.children[pid] = rid
        self._send({"id": rid, "pid": pid})
        with contextlib.suppress(OSError):
            os.write(go_w, b"g")
        os.close(go_w)

    def _become_child(self, request: dict[str, Any], fds: list[int], go_r: int, led_w: int) -> None:
        code = NOT_STARTED_CODE
        try:
            os.setsid()
            os.write(led_w, b"l")
            os.close(led_w)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self._selector.close()
            self.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if os.read(go_r, 1) != b"g":
                os._exit(NOT_STARTED_CODE)
            os.close(go_r)
            _child_setup(request, fds, self.import_env)
            code = _run_entry(self.entry)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rid = self.children.pop(pid, None)
            self._send({"id": rid, "pid": pid, "status": status})

    def _shutdown(self) -> None:
        # The agent is gone: nobody can stop these commands any more.
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def _child_setup(request: dict[str, Any], fds: list[int], import_env: dict[str, str]) -> None:
    """Turn the forked child (already a session leader) into what ``execve`` of GAM's
    console script gives."""
    if request.get("tty"):
        fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
    targets = [fds[0]] * 3 if len(fds) == 1 else fds
    for number, fd in enumerate(targets):
        os.dup2(fd, number)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    env = {str(k): str(v) for k, v in request["env"].items()}
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(import_env)
    argv = [str(a) for a in request["argv"]]
    sys.argv = argv
    # A script's directory is sys.path[0] of a cold run (-P kept the zygote's cwd out).
    sys.path.insert(0, str(Path(os.path.realpath(argv[0])).parent))
    _rebuild_stdio(bool(env.get("PYTHONUNBUFFERED")))


def _stdio(fd: int, like: TextIO | None, *, write: bool, unbuffered: bool) -> io.TextIOWrapper:
    """One standard stream, built as CPython's ``create_stdio`` builds it."""
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    buffer: io.BufferedIOBase | io.FileIO
    if not write:
        buffer = io.BufferedReader(raw)
    elif unbuffered:
        buffer = raw
    else:
        buffer = io.BufferedWriter(raw)
    stream = io.TextIOWrapper(
        buffer,
        encoding=like.encoding if like is not None else None,
        errors=like.errors if like is not None else None,
        newline="\n",
        line_buffering=not unbuffered and (os.isatty(fd) or fd == 2),
        write_through=unbuffered,
    )
    with contextlib.suppress(AttributeError, TypeError):
        stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _rebuild_stdio(unbuffered: bool) -> None:
    """New ``sys.std*`` on fds 0-2, unbuffered when PYTHONUNBUFFERED says so."""
    streams = {
        "stdin": _stdio(0, sys.__stdin__, write=False, unbuffered=False),
        "stdout": _stdio(1, sys.__stdout__, write=True, unbuffered=unbuffered),
        "stderr": _stdio(2, sys.__stderr__, write=True, unbuffered=unbuffered),
    }
    for name, stream in streams.items():
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_code(value: object) -> int:
    """The status ``sys.exit(value)`` gives, as the interpreter computes it."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(Exception):
        print(value, file=sys.stderr)
    return 1


def _run_entry(entry: Callable[[], object]) -> int:
    """Run the console script's body (``sys.exit(main())``) and the interpreter's exit."""
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    try:
        code = _exit_code(entry())
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()  # join non-daemon threads, as finalisation does
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        code = _FLUSH_FAILED_CODE
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    if code == -signal.SIGINT:  # an uncaught KeyboardInterrupt ends the process by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 128 + signal.SIGINT
    return code


def main(argv: list[str] | None = None) -> int:
    """Import the entry point, then serve the agent; see the module docstring."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m session_runtime.agent.zygote MODULE:FUNC FD", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(args[1]))
    before = dict(os.environ)
    try:
        entry = _entry(args[0])
    except Exception as exc:
        with contextlib.suppress(OSError):
            sock.send(encode({"ready": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    import_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
    # What the import built is never freed: keep the collector off those pages, so a
    # child's collections do not copy-on-write all of them (the fork server's usual trick).
    gc.collect()
    gc.freeze()
    return Zygote(sock, entry, import_env).serve()


if __name__ == "__main__":
    sys.exit(main())
