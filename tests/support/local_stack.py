"""Helpers for tests on the real local stack: start/stop it safely, read its logs, raw HTTP.

A stack started with :func:`running_stack` is always taken down, even when the
test body fails; :func:`assert_stack_gone` proves by pid and port that nothing
is left. :class:`LogCursor` reads only the access-log lines (or DNS queries) a
test caused, so tests sharing one stack do not see each other's traffic.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack, proxy
from session_runtime.backends.local.dns import find_dnsmasq
from session_runtime.backends.local.processes import (
    is_alive,
    port_is_free,
    spawn,
    stop,
    wait_for_port,
)
from session_runtime.backends.local.state import ProcessRecord
from session_runtime.errors import BackendUnavailableError
from tests.support.concurrent_creates import create_concurrently

__all__ = [
    "HttpReply",
    "LogCursor",
    "StackProcesses",
    "assert_stack_gone",
    "create_many_in_subprocess",
    "raw_request",
    "restart_nginx",
    "running_stack",
    "stack_processes",
]


@dataclass(frozen=True)
class StackProcesses:
    """Every process and port a stack recorded, captured while it runs (for after ``down``)."""

    processes: list[ProcessRecord]
    tcp_ports: list[tuple[str, int]]
    udp_ports: list[tuple[str, int]]


def stack_processes(stack: LocalStack) -> StackProcesses:
    """Capture the pids and ports of the stack and all its sessions right now."""
    record = stack.state.read_stack()
    assert record is not None, "the stack is not up"
    sessions = stack.state.list_sessions()
    return StackProcesses(
        processes=[record.dns, record.proxy, *(s.process for s in sessions)],
        tcp_ports=[
            ("127.0.0.1", record.proxy_port),
            ("127.0.0.1", record.dns_port),
            *((s.address, s.port) for s in sessions),
        ],
        udp_ports=[("127.0.0.1", record.dns_port)],
    )


def assert_stack_gone(captured: StackProcesses) -> None:
    """Assert every captured process has exited and every captured port can be bound again."""
    alive = [p for p in captured.processes if is_alive(p)]
    assert not alive, f"processes still running: {[p.pid for p in alive]}"
    bound = [a for a in captured.tcp_ports if not port_is_free(*a)]
    bound += [a for a in captured.udp_ports if not port_is_free(*a, udp=True)]
    assert not bound, f"ports still bound: {bound}"


@contextlib.contextmanager
def running_stack(state_dir: Path, *, default_session: bool = True) -> Iterator[LocalStack]:
    """Bring a stack up (DNS queries logged) and always take it down afterwards.

    Args:
        state_dir: a fresh directory for the stack's state.
        default_session: start the ``default`` session too.
    """
    stack = LocalStack(state_dir)
    try:
        stack.up(log_dns_queries=True, default_session=default_session, timeout=30.0)
        yield stack
    finally:
        stack.down()


class LogCursor:
    """Reads what was appended to the stack's nginx access log and DNS query log since creation.

    Args:
        stack: a running stack.
    """

    def __init__(self, stack: LocalStack) -> None:
        self.access_path = stack.state.logs_dir / "nginx-access.log"
        self.dns_path = stack.state.logs_dir / "dnsmasq.log"
        self._access_at = self._size(self.access_path)
        self._dns_at = self._size(self.dns_path)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def access_entries(self, *, expect: int = 1, timeout: float = 5.0) -> list[dict[str, str]]:
        """Return the new access-log entries, waiting until at least ``expect`` are written.

        nginx writes the line after the response, so a test that has just read the
        response may be a moment early.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.access_path.open("rb") as handle:
                handle.seek(self._access_at)
                data = handle.read()
            # Only complete lines: nginx may be half-way through writing the last one.
            lines = data[: data.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines()
            entries = [json.loads(line) for line in lines if line.strip()]
            if len(entries) >= expect or time.monotonic() >= deadline:
                return entries
            time.sleep(0.02)

    def dns_queries(self) -> list[str]:
        """Return the names queried from dnsmasq since creation."""
        with self.dns_path.open("rb") as handle:
            handle.seek(self._dns_at)
            data = handle.read()
        text = data[: data.rfind(b"\n") + 1].decode("utf-8", "replace")  # complete lines only
        return [
            line.split("query[", 1)[1].split("] ", 1)[1].split(" from ", 1)[0]
            for line in text.splitlines()
            if "query[" in line
        ]


@dataclass(frozen=True)
class HttpReply:
    """A raw HTTP reply: status, lower-cased headers and the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def missing_stack_tools() -> list[str]:
    """The local stack's programs (nginx, dnsmasq) that are not installed."""
    missing = []
    for name, find in (("nginx", proxy.find_nginx), ("dnsmasq", find_dnsmasq)):
        try:
            find()
        except BackendUnavailableError:
            missing.append(name)
    return missing


def read_head(sock: socket.socket) -> bytes:
    """Read until the end of a reply's head (or EOF); what came after it is included."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def raw_request(
    port: int,
    target: str,
    *,
    host: str = "localhost",
    websocket: bool = True,
    method: str = "GET",
    extra_headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> HttpReply:
    """Send one request to the proxy exactly as written (no client-side normalisation).

    Args:
        port: the proxy's port on 127.0.0.1.
        target: the request target, sent verbatim (``/ws/session/%2e%2e/`` stays encoded).
        host: the Host header.
        websocket: add the WebSocket upgrade headers.
        method: the HTTP method.
        extra_headers: more headers.
        body: bytes sent after the head as they are (framing headers are the caller's).
    """
    headers = {"Host": host, "Connection": "close"}
    if websocket:
        headers.update(
            {
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Protocol": naming.SUBPROTOCOL,
            }
        )
    headers.update(extra_headers or {})
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        header_blob, _, body = read_head(sock).partition(b"\r\n\r\n")
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        length = int(parsed.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return HttpReply(status=status, headers=parsed, body=body[:length] if length else body)


def create_many_in_subprocess(
    state_dir: str, session_ids: list[str], max_sessions: int, go_file: str
) -> list[str]:
    """Create sessions concurrently from one worker process, one thread per id.

    Runs in a ``multiprocessing`` worker: it waits for ``go_file`` so that all
    workers start creating at (nearly) the same moment. Each thread takes the
    state directory's lock through its own file descriptor, exactly as separate
    processes do.

    Returns:
        ``"created"`` or ``"<ErrorType>: <message>"`` per id, in order.
    """
    return create_concurrently(lambda: LocalBackend(state_dir), session_ids, max_sessions, go_file)


def restart_nginx(stack: LocalStack) -> None:
    """Stop the stack's nginx and start it again on the same port (a proxy pod restart)."""
    state = stack.state
    record = state.read_stack()
    assert record is not None
    assert stop(record.proxy)
    prefix, logs = state.nginx_dir, state.logs_dir
    replacement = spawn(
        proxy.nginx_argv(
            proxy.find_nginx(),
            prefix=prefix,
            conf=prefix / "nginx.conf",
            error_log=logs / "nginx-error.log",
        ),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        log_path=logs / "nginx-stdout.log",
        cwd=prefix,
    )
    with state.locked():
        state.write_stack(record.model_copy(update={"proxy": replacement}))
    assert wait_for_port(proxy.PROXY_LISTEN_ADDRESS, record.proxy_port, replacement, 15)
