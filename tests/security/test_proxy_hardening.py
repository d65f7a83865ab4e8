"""Proxy hardening through the real nginx: query strings, bodies, odd bytes, slow, greedy clients.

Each refusal is nginx's own JSON, proven by the code in the body and by the
access log's empty ``upstream`` (nothing was proxied). The connection limit
gets a stack of its own with a small limit, so the suite's shared stack keeps
the generous default.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalStack
from session_runtime.ids import generate_session_id
from session_runtime.models import BackendSession, CreateRequest
from session_runtime.nginx import (
    CODE_BAD_REQUEST,
    CODE_TOO_MANY_CONNECTIONS,
    DEFAULT_CLIENT_HEADER_TIMEOUT_S,
    NON_ASCII_PATH,
)
from tests.security.conftest import SecureStack, SessionMaker, require_stack_tools
from tests.support.local_stack import LogCursor, raw_request, read_head

_LIMIT = 4
_BEYOND = 200


def _bearer(session: BackendSession) -> dict[str, str]:
    return {"Authorization": f"Bearer {session.token.get_secret_value()}"}


def _every_log(stack: LocalStack) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in stack.state.logs_dir.iterdir() if p.is_file()}


def test_a_query_string_on_a_session_path_is_refused_and_reaches_no_log(
    secure_stack: SecureStack, make_session: SessionMaker
) -> None:
    session = make_session()
    secret = f"leak-{generate_session_id()}"
    cursor = LogCursor(secure_stack.stack)
    reply = raw_request(
        secure_stack.proxy_port,
        naming.session_path(session.session_id) + f"?token={secret}",
        extra_headers=_bearer(session),
    )
    assert reply.status == 400
    body = reply.json()
    assert isinstance(body, dict) and body["code"] == CODE_BAD_REQUEST
    assert "query" in body["error"]
    (entry,) = cursor.access_entries()
    assert entry["status"] == "400" and entry["upstream"] == ""
    leaked = [
        name for name, data in _every_log(secure_stack.stack).items() if secret.encode() in data
    ]
    assert leaked == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Length": "5"}, b"hello"),
        ({"Content-Length": "4096"}, b"x" * 4096),  # over client_max_body_size: still 400
        ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "large-body", "chunked"],
)
def test_a_session_request_with_a_body_gets_400_from_nginx(
    secure_stack: SecureStack,
    make_session: SessionMaker,
    headers: dict[str, str],
    body: bytes,
) -> None:
    session = make_session()
    cursor = LogCursor(secure_stack.stack)
    reply = raw_request(
        secure_stack.proxy_port,
        naming.session_path(session.session_id),
        extra_headers={"Authorization": f"Bearer {session.token.get_secret_value()}", **headers},
        body=body,
    )
    assert reply.status == 400
    assert json.loads(reply.body)["code"] == CODE_BAD_REQUEST
    (entry,) = cursor.access_entries()
    assert entry["upstream"] == ""


@pytest.mark.parametrize(
    "target",
    [
        naming.SESSION_PATH_PREFIX + "\xff/",
        naming.SESSION_PATH_PREFIX + "ab\xc3\x28cd/",
        "/\x80\x81\xfe?q=\xff",
    ],
    ids=["xff", "bad-utf8-pair", "non-session-path"],
)
def test_bytes_above_0x7f_in_a_path_keep_every_access_log_line_json(
    secure_stack: SecureStack, target: str
) -> None:
    cursor = LogCursor(secure_stack.stack)
    reply = raw_request(secure_stack.proxy_port, target)
    assert 400 <= reply.status < 500
    (entry,) = cursor.access_entries()
    assert entry["path"] == NON_ASCII_PATH
    raw = (secure_stack.stack.state.logs_dir / "nginx-access.log").read_bytes()
    for line in raw.splitlines():
        assert isinstance(json.loads(line.decode("utf-8")), dict)


def test_a_client_that_never_finishes_its_headers_is_cut_off(secure_stack: SecureStack) -> None:
    with socket.create_connection(("127.0.0.1", secure_stack.proxy_port)) as sock:
        sock.settimeout(DEFAULT_CLIENT_HEADER_TIMEOUT_S * 4)  # a bound, not the expectation
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # no blank line, ever
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
    # nginx closes the connection (408, or a plain close): it does not wait forever.
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408")


# --- the per-address connection limit, on a stack of its own -------------------------
@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_stack_tools()
    stack = LocalStack(tmp_path_factory.mktemp("limited") / "stack")
    try:
        stack.up(default_session=False, connections_per_client=_LIMIT, timeout=30.0)
        yield stack
    finally:
        stack.down()


def _session(stack: LocalStack) -> BackendSession:
    backend = stack.backend(idle_timeout=0)
    sid = generate_session_id()
    backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr(f"tok-{generate_session_id()}"),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=10,
        )
    )
    return backend.wait_ready(sid, timeout=30)


def _handshake(port: int, session: BackendSession, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {naming.session_path(session.session_id)} HTTP/1.1\r\nHost: localhost\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {naming.SUBPROTOCOL}\r\n"
            f"Authorization: Bearer {session.token.get_secret_value()}\r\n\r\n"
        ).encode("ascii")
    )
    return sock, read_head(sock)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_one_address_beyond_its_connection_limit_is_refused_while_another_connects(
    limited_stack: LocalStack, tmp_path: Path
) -> None:
    record = limited_stack.state.read_stack()
    assert record is not None
    session = _session(limited_stack)
    with contextlib.ExitStack() as held:
        for _ in range(_LIMIT):  # idle WebSockets holding the address's whole allowance
            sock, reply = _handshake(record.proxy_port, session, "127.0.0.1")
            held.callback(sock.close)
            assert _status(reply) == 101
        refused = []
        for _ in range(_BEYOND):
            sock, reply = _handshake(record.proxy_port, session, "127.0.0.1")
            held.callback(sock.close)
            refused.append(_status(reply))
            if b'"code":"' in reply:
                assert CODE_TOO_MANY_CONNECTIONS.encode() in reply
        assert refused == [429] * _BEYOND
        other, reply = _handshake(record.proxy_port, session, "127.0.0.2")
        held.callback(other.close)
        assert _status(reply) == 101
