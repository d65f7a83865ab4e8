"""A stand-in for GAM whose behaviour is chosen by its arguments.

Tests point ``GAM_BIN`` at the wrapper :func:`fake_gam_bin` writes, to get
commands that are slow, huge, failing or badly encoded on demand:

``version``            prints a GAM 7 banner
``echo ARGS...``       prints its argv as one JSON line (what GAM received)
``sleep N``            prints ``sleeping``, then sleeps N seconds
``spam BYTES``         writes BYTES bytes of ``x`` lines to stdout in 64 KiB writes
``badutf8``            writes invalid UTF-8 to stdout and stderr
``stderr TEXT``        writes TEXT to stderr
``exit N``             exits with status N
``pidfile PATH N``     writes its pid to PATH, then sleeps N seconds
``ignoreterm PATH N``  ignores SIGTERM, writes its pid to PATH, sleeps N seconds
``env NAME``           prints the variable's value or ``<unset>``
``touch PATH``         creates PATH (so tests can tell the fake really ran)
``ticks N SECONDS``    prints ``tick 1`` ... ``tick N``, one every SECONDS
``batch -``            reads command lines from stdin until EOF and runs each (``gam batch -``)
``cat``                copies stdin to stdout until EOF
``orphan N``           leaves a process behind: prints its pid, exits; it lives N seconds more
``ttyinfo``            prints whether stdin/stdout are terminals and the terminal size as
                       JSON, then once more for every line read from stdin, until EOF
``steal PID FILE NEEDLE``  tries to read FILE, ``/proc/PID/environ`` and ``/proc/PID/mem``
                       (PID ``parent``: the agent) and prints one JSON object saying,
                       per source, ``denied:<error>`` or what it read (for memory:
                       whether NEEDLE was found); ``self_environ`` is the control
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import sys
import time
from pathlib import Path

__all__ = ["FAKE_GAM_VERSION", "fake_gam_bin", "main"]

FAKE_GAM_VERSION = "7.99.99"


def fake_gam_bin(directory: Path) -> str:
    """Write an executable wrapper running this module with ``sys.executable``.

    Args:
        directory: where to write it (a test's ``tmp_path``).

    Returns:
        The wrapper's absolute path, for ``GAM_BIN``.
    """
    path = directory / "fake-gam"
    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.argv[0] = {str(Path(__file__).resolve())!r}\n"
        f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')\n",
        encoding="utf-8",
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _write(stream: object, data: bytes) -> None:
    buffer = stream.buffer  # type: ignore[attr-defined]
    buffer.write(data)
    buffer.flush()


def _tty_report() -> None:
    try:
        cols, rows = os.get_terminal_size(1)
    except OSError:
        cols, rows = 0, 0
    report = {"stdin": os.isatty(0), "stdout": os.isatty(1), "cols": cols, "rows": rows}
    _write(sys.stdout, (json.dumps(report) + "\n").encode())


def _try_read(path: str) -> str:
    try:
        return "read:" + Path(path).read_bytes()[:65536].decode("latin-1")
    except OSError as exc:
        return f"denied:{type(exc).__name__}"


def _try_memory(pid: int, needle: bytes) -> str:
    """Read every readable mapping of ``pid`` through /proc/PID/mem and look for ``needle``."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text(encoding="ascii").splitlines()
        handle = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        return f"denied:{type(exc).__name__}"
    found = False
    with handle:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(v, 16) for v in span.split("-"))
            try:
                handle.seek(start)
                found = found or needle in handle.read(min(end - start, 64 << 20))
            except (OSError, OverflowError, ValueError):
                continue
    return f"read:{'found' if found else 'not-found'}"


def _steal(pid: int, path: str, needle: bytes) -> dict[str, str]:
    return {
        "file": _try_read(path),
        "environ": _try_read(f"/proc/{pid}/environ"),
        "mem": _try_memory(pid, needle),
        "self_environ": _try_read("/proc/self/environ")[:5],
    }


def main(argv: list[str]) -> int:  # noqa: PLR0912 - one branch per behaviour
    """Behave as the first argument says; see the module docstring."""
    if not argv:
        print("fake gam: no command", file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "version":
        print(f"GAM {FAKE_GAM_VERSION} - fake GAM for tests\nPython {sys.version.split()[0]}")
    elif cmd == "echo":
        print(json.dumps(args))
    elif cmd == "sleep":
        _write(sys.stdout, b"sleeping\n")
        time.sleep(float(args[0]))
    elif cmd == "spam":
        remaining = int(args[0])
        line = b"x" * 63 + b"\n"
        block = line * 1024  # 64 KiB
        while remaining > 0:
            piece = block[:remaining]
            _write(sys.stdout, piece)
            remaining -= len(piece)
    elif cmd == "badutf8":
        _write(sys.stdout, b"ok \xff\xfe bad \xc3\n")
        _write(sys.stderr, b"err \x80\n")
    elif cmd == "stderr":
        print(" ".join(args), file=sys.stderr)
    elif cmd == "exit":
        return int(args[0])
    elif cmd in ("pidfile", "ignoreterm"):
        if cmd == "ignoreterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(args[0]).write_text(str(os.getpid()), encoding="utf-8")
        _write(sys.stdout, b"ready\n")
        time.sleep(float(args[1]))
    elif cmd == "env":
        print(os.environ.get(args[0], "<unset>"))
    elif cmd == "touch":
        Path(args[0]).touch()
    elif cmd == "ticks":
        for i in range(1, int(args[0]) + 1):
            _write(sys.stdout, f"tick {i}\n".encode())
            time.sleep(float(args[1]))
    elif cmd == "batch" and args == ["-"]:
        code = 0
        for line in sys.stdin:
            if line.strip():
                code = max(code, main(shlex.split(line)))
                sys.stdout.flush()
        return code
    elif cmd == "orphan":
        pid = os.fork()
        if pid == 0:  # the orphan: its parent is gone by the time it exits
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # a daemon's manners: the command's output ends now
            time.sleep(float(args[0]))
            os._exit(0)
        _write(sys.stdout, f"{pid}\n".encode())
    elif cmd == "cat":
        while chunk := os.read(0, 65536):
            _write(sys.stdout, chunk)
    elif cmd == "ttyinfo":
        _tty_report()
        for _ in sys.stdin:
            _tty_report()
    elif cmd == "steal":
        pid = os.getppid() if args[0] == "parent" else int(args[0])
        print(json.dumps(_steal(pid, args[1], args[2].encode())))
    else:
        print(f"fake gam: unknown command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
