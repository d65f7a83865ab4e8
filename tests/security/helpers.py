"""Helpers shared by the security and reliability suites.

* :func:`recording_gam_bin` wraps the fake GAM so that every execution is
  appended to a file: tests prove that *nothing ran* by reading it.
* :class:`KeepAliveHttp` sends requests exactly as written on one keep-alive
  connection (reconnecting when the server closes), so thousands of generated
  paths go through nginx quickly and nothing normalises them on the way.
* :func:`hypothesis_examples` reads the larger budget from the environment.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support import fake_gam

__all__ = [
    "HYPOTHESIS_EXAMPLES_ENV",
    "KeepAliveHttp",
    "RawReply",
    "executions",
    "hypothesis_examples",
    "recording_gam_bin",
    "rss_bytes",
]

#: Environment variable raising the hypothesis budget of the security suite
#: (``GAMGUI_HYPOTHESIS_EXAMPLES=2000 pytest tests/security``).
HYPOTHESIS_EXAMPLES_ENV = "GAMGUI_HYPOTHESIS_EXAMPLES"


def hypothesis_examples(default: int) -> int:
    """Return the example budget: ``$GAMGUI_HYPOTHESIS_EXAMPLES`` if set, else ``default``.

    Args:
        default: the budget of the normal run.
    """
    raw = os.environ.get(HYPOTHESIS_EXAMPLES_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{HYPOTHESIS_EXAMPLES_ENV} must be a positive integer (got {raw!r})")
    return int(raw)


def recording_gam_bin(directory: Path) -> tuple[str, Path]:
    """Write a GAM stand-in that logs each execution's argv, then behaves as the fake GAM.

    Args:
        directory: where the wrapper and its record go.

    Returns:
        The executable's path (for ``GAM_BIN``) and the record file (JSON lines of argv).
    """
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / "executions.jsonl"
    record.touch()
    fake = str(Path(fake_gam.__file__).resolve())
    path = directory / "recording-gam"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, runpy, sys\n"
        f"with open({str(record)!r}, 'a', encoding='utf-8') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.argv[0] = {fake!r}\n"
        f"runpy.run_path({fake!r}, run_name='__main__')\n",
        encoding="utf-8",
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path), record


def executions(record: Path, *, ignore_version_probe: bool = True) -> list[list[str]]:
    """Return the argv of every recorded GAM execution.

    Args:
        record: the file :func:`recording_gam_bin` returned.
        ignore_version_probe: drop the ``version`` run each agent makes at start.
    """
    runs = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in runs if not (ignore_version_probe and r == ["version"])]


def rss_bytes(pid: int) -> int:
    """Return the resident set size of ``pid`` and all its descendants, in bytes."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return int(total)


@dataclass(frozen=True)
class RawReply:
    """One HTTP reply: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


class KeepAliveHttp:
    """Raw HTTP/1.1 requests to one loopback port over a reused connection.

    Args:
        port: the server's port on 127.0.0.1.
        timeout: seconds per socket operation.
    """

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self.connections_opened = 0
        #: Called before opening a new connection. nginx logs a request after its
        #: reply, and another worker may serve the next connection: a caller that
        #: reads the access log in order waits here for the earlier lines.
        self.before_connect: Callable[[], object] | None = None

    def close(self) -> None:
        """Close the current connection, if any."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def request(
        self, method: str, target: str, headers: dict[str, str], *, body: bytes = b""
    ) -> RawReply:
        """Send one request verbatim and read its reply.

        Args:
            method: the HTTP method.
            target: the request target, sent byte for byte (latin-1).
            headers: header lines, sent in order, unvalidated.
            body: the request body (``Content-Length`` is the caller's business).
        """
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        data = head.encode("latin-1") + b"\r\n" + body
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.sendall(data)
                return self._read_reply(sock, head_only=method == "HEAD")
            except ConnectionError:
                # A connection nginx closed after the previous reply: once more, fresh.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self.before_connect is not None:
                self.before_connect()
            self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self._buffer = b""
            self.connections_opened += 1
        return self._sock

    def _fill(self, sock: socket.socket) -> bool:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def _read_reply(self, sock: socket.socket, *, head_only: bool) -> RawReply:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill(sock):
                if not self._buffer:
                    raise ConnectionResetError("closed before any reply")
                raise AssertionError(f"truncated reply head: {self._buffer[:200]!r}")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        if head_only or status in (101, 204, 304):
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self._buffer) < length:
                if not self._fill(sock):
                    raise AssertionError("connection closed inside the body")
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        else:  # no length: the body runs to the close
            while self._fill(sock):
                pass
            body, self._buffer = self._buffer, b""
            self.close()
        if status == 101 or headers.get("connection", "").lower() == "close":
            self.close()
        return RawReply(status, headers, body)
