"""Hostile input through the real nginx: the agent and the proxy stay up, bounded, unaffected.

Every test attacks one session (the victim) and then proves that the victim's
agent and nginx still answer, that another session (the bystander) never
noticed, and, for the floods, that memory stayed bounded (psutil RSS, with
generous bounds: the point is "not proportional to the abuse").
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.models import BackendSession
from session_runtime.protocol import MAX_MESSAGE_BYTES
from tests.security.conftest import SecureStack, create_ready
from tests.security.helpers import executions, rss_bytes

#: Growth allowed over an attack, in bytes (the attacks themselves move megabytes).
RSS_SLACK = 40 * 1024 * 1024


class Pair:
    """The attacked session and one that must not notice."""

    def __init__(self, victim: BackendSession, bystander: BackendSession) -> None:
        self.victim = victim
        self.bystander = bystander


@pytest.fixture(scope="module")
def pair(secure_stack: SecureStack) -> Iterator[Pair]:
    victim, bystander = create_ready(secure_stack), create_ready(secure_stack)
    try:
        yield Pair(victim, bystander)
    finally:
        secure_stack.backend.delete(victim.session_id)
        secure_stack.backend.delete(bystander.session_id)


def _agent_pid(secure_stack: SecureStack, session: BackendSession) -> int:
    record = secure_stack.stack.state.read_session(session.session_id)
    assert record is not None
    return record.process.pid


def _nginx_pid(secure_stack: SecureStack) -> int:
    record = secure_stack.stack.state.read_stack()
    assert record is not None
    return record.proxy.pid


def _open(secure_stack: SecureStack, session: BackendSession) -> websocket.WebSocket:
    ws = websocket.create_connection(
        secure_stack.url(session.session_id),
        header=[f"Authorization: Bearer {session.token.get_secret_value()}"],
        subprotocols=[naming.SUBPROTOCOL],
        timeout=10,
    )
    assert json.loads(ws.recv())["type"] == "welcome"
    return ws


def _close_code(ws: websocket.WebSocket) -> int:
    """Read the next frame, which must be a close, and return its code.

    Read raw: websocket-client answers a close itself, and the peer may have
    reset the connection by then.
    """
    frame = ws.recv_frame()  # type: ignore[no-untyped-call]
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.close(timeout=1)
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE, frame
    return int.from_bytes(frame.data[:2], "big")


def _reply(ws: websocket.WebSocket) -> dict[str, object]:
    data: dict[str, object] = json.loads(ws.recv())
    return data


def _assert_unharmed(secure_stack: SecureStack, pair: Pair) -> None:
    """Both sessions answer a command through nginx; nginx answers its health check."""
    for session in (pair.victim, pair.bystander):
        with SessionConnection.open(
            secure_stack.url(session.session_id), session.token.get_secret_value()
        ) as conn:
            result = conn.run(["echo", "still", "here"])
        assert result.exit_code == 0 and json.loads(result.stdout) == ["still", "here"]
    with socket.create_connection(("127.0.0.1", secure_stack.proxy_port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_an_oversize_frame_closes_with_1009_and_nothing_else_is_harmed(
    secure_stack: SecureStack, pair: Pair, gam_record: Path
) -> None:
    pid = _agent_pid(secure_stack, pair.victim)
    before = rss_bytes(pid)
    for _ in range(10):
        ws = _open(secure_stack, pair.victim)
        ws.send('{"type":"command","command":"' + "x" * (4 * MAX_MESSAGE_BYTES) + '"}')
        assert _close_code(ws) == 1009  # message too big
    assert rss_bytes(pid) < before + RSS_SLACK
    assert executions(gam_record) == []
    _assert_unharmed(secure_stack, pair)


BAD_TEXT_FRAMES = {
    "truncated JSON": '{"type":"command","command":"info domain"',
    "a lone brace": "{",
    "argv of numbers": '{"type":"command","argv":[1,2,3]}',
    "both command and argv": '{"type":"command","command":"a","argv":["b"]}',
    "null type": '{"type":null,"command":"version"}',
    "no type": '{"command":"version"}',
    "unknown type exec": '{"type":"exec","argv":["version"]}',
    "unknown type shell": '{"type":"shell","command":"version"}',
    "upper-case type": '{"type":"COMMAND","command":"version"}',
    "type as a list": '{"type":["command"],"command":"version"}',
    "deeply nested arrays": '{"type":"command","argv":' + "[" * 20000 + "]" * 20000 + "}",
    "deeply nested objects": '{"type":"command","x":' + '{"a":' * 10000 + "1" + "}" * 10000 + "}",
    "nested argv value": '{"type":"command","argv":["a",' + "[" * 5000 + "]" * 5000 + "]}",
    "huge number": '{"type":"command","id":' + "9" * 5000 + ',"command":"version"}',
    "NaN id": '{"type":"ping","id":NaN}',
    "duplicate keys": '{"type":"ping","type":"command","command":"version","id":"d"}',
    "empty command": '{"type":"command","command":"   "}',
    "lone surrogate": '{"type":"command","command":"\\ud800"}',
}


@pytest.mark.parametrize("name", list(BAD_TEXT_FRAMES))
def test_malformed_messages_get_bad_request_and_the_connection_stays(
    secure_stack: SecureStack, pair: Pair, gam_record: Path, name: str
) -> None:
    frame = BAD_TEXT_FRAMES[name]
    assert len(frame.encode()) <= MAX_MESSAGE_BYTES
    ws = _open(secure_stack, pair.victim)
    try:
        ws.send(frame)
        reply = _reply(ws)
        if name == "duplicate keys":
            # JSON's last key wins: a valid command. Only then may something run.
            types = [reply["type"]]
            while types[-1] != "exit":
                types.append(_reply(ws)["type"])
            assert types[0] == "started"
        else:
            assert reply["type"] == "error", reply
            assert reply["code"] == "bad_request"
            assert executions(gam_record) == []
        ws.send(json.dumps({"type": "ping", "id": "after"}))
        assert _reply(ws) == {"type": "pong", "id": "after"}
    finally:
        ws.close()


def test_binary_frames_get_bad_request_and_never_run(
    secure_stack: SecureStack, pair: Pair, gam_record: Path
) -> None:
    ws = _open(secure_stack, pair.victim)
    try:
        for payload in (b"version", b'{"type":"command","command":"version"}', b"\x00\xff" * 100):
            ws.send_binary(payload)
            reply = _reply(ws)
            assert reply["type"] == "error" and reply["code"] == "bad_request"
    finally:
        ws.close()
    assert executions(gam_record) == []
    _assert_unharmed(secure_stack, pair)


def test_invalid_utf8_in_a_text_frame_closes_with_1007_and_nothing_runs(
    secure_stack: SecureStack, pair: Pair, gam_record: Path
) -> None:
    ws = _open(secure_stack, pair.victim)
    try:
        ws.send_frame(websocket.ABNF.create_frame(b"version \xff\xfe", websocket.ABNF.OPCODE_TEXT))
        assert _close_code(ws) == 1007  # invalid frame payload data
    finally:
        ws.close()
    assert executions(gam_record) == []
    _assert_unharmed(secure_stack, pair)


def test_a_flood_of_pings_is_answered_in_order_with_bounded_memory(
    secure_stack: SecureStack, pair: Pair, gam_record: Path
) -> None:
    agent, nginx = _agent_pid(secure_stack, pair.victim), _nginx_pid(secure_stack)
    agent_before, nginx_before = rss_bytes(agent), rss_bytes(nginx)
    count = 3000
    ws = _open(secure_stack, pair.victim)
    try:
        # Protocol pings, all sent before any pong is read (the agent must apply
        # backpressure, not buffer without bound), and WebSocket ping frames between.
        for i in range(count):
            ws.send(json.dumps({"type": "ping", "id": f"p{i}"}))
            if i % 10 == 0:
                ws.ping(b"flood")
        pongs: list[str] = []
        while len(pongs) < count:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                pongs.append(json.loads(data)["id"])
        assert pongs == [f"p{i}" for i in range(count)]
    finally:
        ws.close()
    assert rss_bytes(agent) < agent_before + RSS_SLACK
    assert rss_bytes(nginx) < nginx_before + RSS_SLACK
    assert executions(gam_record) == []
    _assert_unharmed(secure_stack, pair)


def _half_open(host: str, port: int, session: BackendSession) -> socket.socket:
    """Start a handshake and stop half-way through the headers (slowloris)."""
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(
        f"GET {naming.session_path(session.session_id)} HTTP/1.1\r\n"
        "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: ".encode()
    )
    return sock


def test_slowloris_clients_holding_half_open_handshakes_block_no_one(
    secure_stack: SecureStack, pair: Pair, gam_record: Path
) -> None:
    agent_host, agent_port = str(pair.victim.agent_address).rsplit(":", 1)
    nginx = _nginx_pid(secure_stack)
    nginx_before = rss_bytes(nginx)
    held: list[socket.socket] = []
    try:
        for _ in range(150):
            held.append(_half_open("127.0.0.1", secure_stack.proxy_port, pair.victim))
        for _ in range(40):
            held.append(_half_open(agent_host, int(agent_port), pair.victim))
        for sock in held[::7]:  # trickle one more byte, as slowloris does
            sock.sendall(b"a")
        _assert_unharmed(secure_stack, pair)  # served while they hang, not after
        assert rss_bytes(nginx) < nginx_before + RSS_SLACK
    finally:
        for sock in held:
            sock.close()
    assert executions(gam_record) == [["echo", "still", "here"]] * 2
    _assert_unharmed(secure_stack, pair)
