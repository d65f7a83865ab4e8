"""Every wrong way to present a token is refused before anything runs.

Sessions here run a GAM stand-in that appends each execution to a file, so
"nothing ran" is read from that file (and from the agent's own log), not
inferred from the refusal. Every handshake goes through the real nginx.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.errors import SessionUnauthorizedError
from session_runtime.models import BackendSession
from session_runtime.nginx import CODE_BAD_REQUEST
from tests.security.conftest import SecureStack, SessionMaker, create_ready
from tests.security.helpers import executions
from tests.support.local_stack import LogCursor, raw_request

#: (name, how to build the request's extra headers and query from the right/other token)
Presentation = Callable[[str, str], tuple[dict[str, str], str]]


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


BAD_PRESENTATIONS: dict[str, Presentation] = {
    "no token": lambda tok, other: ({}, ""),
    "empty bearer": lambda tok, other: ({"Authorization": "Bearer "}, ""),
    "wrong token": lambda tok, other: (_bearer("not-the-token-" + "0" * 20), ""),
    "another session's token": lambda tok, other: (_bearer(other), ""),
    "token in the query string": lambda tok, other: ({}, f"?token={tok}"),
    "token as access_token": lambda tok, other: ({}, f"?access_token={tok}"),
    "token in the query, wrong bearer": lambda tok, other: (_bearer("x"), f"?token={tok}"),
    "truncated by one": lambda tok, other: (_bearer(tok[:-1]), ""),
    "truncated to a prefix": lambda tok, other: (_bearer(tok[:8]), ""),
    "padded at the end": lambda tok, other: (_bearer(tok + "A"), ""),
    "padded at the start": lambda tok, other: (_bearer("A" + tok), ""),
    "doubled": lambda tok, other: (_bearer(tok + tok), ""),
    "upper-cased": lambda tok, other: (_bearer(tok.upper()), ""),
    "basic scheme": lambda tok, other: (
        {"Authorization": "Basic " + base64.b64encode(f"x:{tok}".encode()).decode()},
        "",
    ),
    "no scheme": lambda tok, other: ({"Authorization": tok}, ""),
    "in a cookie": lambda tok, other: ({"Cookie": f"token={tok}"}, ""),
    "in another header": lambda tok, other: ({"X-Session-Token": tok}, ""),
    "subprotocol without the bearer prefix": lambda tok, other: (
        {"Sec-WebSocket-Protocol": f"{naming.SUBPROTOCOL}, {tok}"},
        "",
    ),
    "wrong bearer subprotocol": lambda tok, other: (
        {"Sec-WebSocket-Protocol": f"{naming.SUBPROTOCOL}, {naming.TOKEN_BEARER_PREFIX}{other}"},
        "",
    ),
    "truncated bearer subprotocol": lambda tok, other: (
        {"Sec-WebSocket-Protocol": f"{naming.SUBPROTOCOL}, {naming.TOKEN_BEARER_PREFIX}{tok[:-1]}"},
        "",
    ),
}


@pytest.fixture(scope="module")
def pair(secure_stack: SecureStack) -> Iterator[tuple[BackendSession, BackendSession]]:
    """A target session and another one (whose token must not open the target)."""
    sessions = (create_ready(secure_stack), create_ready(secure_stack))
    try:
        yield sessions
    finally:
        for session in sessions:
            secure_stack.backend.delete(session.session_id)


def _log_records(secure_stack: SecureStack, session_id: str, since: int) -> list[dict[str, object]]:
    """The agent's JSON log records written after byte ``since`` of its log."""
    with secure_stack.stack.state.session_log(session_id).open("rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


@pytest.mark.parametrize("how", list(BAD_PRESENTATIONS))
def test_a_badly_presented_token_is_refused_through_the_proxy_and_nothing_runs(
    secure_stack: SecureStack,
    pair: tuple[BackendSession, BackendSession],
    gam_record: Path,
    how: str,
) -> None:
    target, other = pair
    token, other_token = target.token.get_secret_value(), other.token.get_secret_value()
    headers, query = BAD_PRESENTATIONS[how](token, other_token)
    cursor = LogCursor(secure_stack.stack)
    log_at = secure_stack.stack.state.session_log(target.session_id).stat().st_size

    reply = raw_request(
        secure_stack.proxy_port, naming.session_path(target.session_id) + query,
        extra_headers=headers,
    )  # fmt: skip

    assert token.encode() not in reply.body
    (entry,) = cursor.access_entries()
    assert token not in json.dumps(entry) and other_token not in json.dumps(entry)
    records = _log_records(secure_stack, target.session_id, log_at)
    if query:  # refused by nginx itself: the query never reaches the agent
        assert reply.status == 400
        body = reply.json()
        assert isinstance(body, dict) and body["code"] == CODE_BAD_REQUEST
        assert entry["upstream"] == "" and records == []
    else:
        assert reply.status == 401
        assert reply.json() == {"error": "missing or invalid token", "code": "unauthorized"}
        assert entry["upstream"] == target.agent_address  # refused by the agent itself
        # One log line and one audit line (without the token) say it was refused.
        assert [r["event"] for r in records] == ["rejected", "audit"]
        assert records[1]["action"] == "reject" and records[1]["status"] == 401
        assert records[0]["status"] == 401 and records[0]["reason"] == "token"
    assert executions(gam_record) == []


def test_the_client_reports_a_refused_token_as_unauthorized_without_the_token(
    secure_stack: SecureStack, pair: tuple[BackendSession, BackendSession], gam_record: Path
) -> None:
    target, other = pair
    other_token = other.token.get_secret_value()
    for in_subprotocol in (False, True):
        with pytest.raises(SessionUnauthorizedError) as info:
            SessionConnection.open(
                secure_stack.url(target.session_id),
                other_token,
                token_in_subprotocol=in_subprotocol,
            )
        assert info.value.status == 401
        assert "Error joining session" in str(info.value)
        assert other_token not in str(info.value) and other_token not in repr(info.value)
    assert executions(gam_record) == []


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def _handshake_head(session_id: str, header_lines: list[str]) -> bytes:
    return (
        f"GET {naming.session_path(session_id)} HTTP/1.1\r\n"
        "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Protocol: {naming.SUBPROTOCOL}\r\n"
        + "".join(f"{line}\r\n" for line in header_lines)
        + "\r\n"
    ).encode()


def _send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` at once to the proxy and read until the reply's head and body are in."""
    return _send_raw_to("127.0.0.1", port, data)


def _send_raw_to(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            length = next(
                (int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                 if k.strip().lower() == b"content-length"),
                None,
            )  # fmt: skip
            if sep and length is not None and len(body) >= length:
                break
    return reply


@pytest.mark.parametrize("right_first", [True, False])
def test_two_authorization_headers_are_refused_even_if_one_is_right(
    secure_stack: SecureStack,
    pair: tuple[BackendSession, BackendSession],
    gam_record: Path,
    right_first: bool,
) -> None:
    target, other = pair
    lines = [
        f"Authorization: Bearer {target.token.get_secret_value()}",
        f"Authorization: Bearer {other.token.get_secret_value()}",
    ]
    if not right_first:
        lines.reverse()
    head = _handshake_head(target.session_id, lines)
    through_proxy = _send_raw(secure_stack.proxy_port, head)
    # nginx itself refuses a duplicate Authorization line; the agent must too.
    assert through_proxy.startswith((b"HTTP/1.1 400", b"HTTP/1.1 401")), through_proxy[:200]
    host, port = str(target.agent_address).rsplit(":", 1)
    direct = _send_raw_to(host, int(port), head)
    assert direct.startswith(b"HTTP/1.1 401"), direct[:200]
    assert b'"code": "unauthorized"' in direct
    assert executions(gam_record) == []


def test_a_command_pipelined_behind_a_refused_handshake_never_runs(
    secure_stack: SecureStack, pair: tuple[BackendSession, BackendSession], gam_record: Path
) -> None:
    target, other = pair
    head = _handshake_head(
        target.session_id, [f"Authorization: Bearer {other.token.get_secret_value()}"]
    )
    frames = _masked_text_frame('{"type":"command","id":"x","argv":["echo","pwned"]}')
    frames += _masked_text_frame("echo pwned-plain")
    reply = _send_raw(secure_stack.proxy_port, head + frames)
    assert reply.startswith(b"HTTP/1.1 401")
    assert executions(gam_record) == []
    # The session itself still works for its own token, and that run is recorded.
    with SessionConnection.open(
        secure_stack.url(target.session_id), target.token.get_secret_value()
    ) as conn:
        assert conn.run(["echo", "allowed"]).exit_code == 0
    assert executions(gam_record) == [["echo", "allowed"]]


def test_the_token_of_a_closed_and_recreated_session_no_longer_opens_it(
    secure_stack: SecureStack, make_session: SessionMaker, gam_record: Path
) -> None:
    first = make_session()
    old_token = first.token.get_secret_value()
    assert secure_stack.backend.delete(first.session_id)
    second = make_session(first.session_id)
    assert second.token.get_secret_value() != old_token

    with pytest.raises(SessionUnauthorizedError) as info:
        SessionConnection.open(secure_stack.url(first.session_id), old_token)
    assert old_token not in str(info.value)
    assert executions(gam_record) == []
    with SessionConnection.open(
        secure_stack.url(first.session_id), second.token.get_secret_value()
    ) as conn:
        assert conn.welcome.session_id == first.session_id
