"""Commands through a running agent with a fake GAM: output, errors, busy, cancel."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import websocket

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.errors import CommandRejectedError, CommandTimeoutError, ConnectionLostError
from session_runtime.protocol import CLIENT_MESSAGE_TYPES, MAX_MESSAGE_BYTES
from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent, running_agent


def _raw(agent: RunningAgent) -> websocket.WebSocket:
    ws = websocket.create_connection(
        agent.url,
        header=[f"Authorization: Bearer {TOKEN}"],
        subprotocols=[naming.SUBPROTOCOL],
        timeout=10,
    )
    assert json.loads(ws.recv())["type"] == "welcome"
    return ws


def _until(ws: websocket.WebSocket, kind: str) -> list[dict[str, object]]:
    seen = []
    while True:
        message = json.loads(ws.recv())
        seen.append(message)
        if message["type"] == kind:
            return seen


def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_run_returns_exit_code_and_separate_streams(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        result = conn.run(["stderr", "to", "stderr"])
        assert result.exit_code == 0
        assert result.stdout == ""
        assert result.stderr == "to stderr\n"
        echoed = conn.run("gam echo a 'b c'")
        assert json.loads(echoed.stdout) == ["a", "b c"]


def test_non_zero_exit_code_is_reported(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        assert conn.run("exit 3").exit_code == 3


def test_invalid_utf8_is_replaced_not_fatal(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        result = conn.run("badutf8")
        assert result.exit_code == 0
        assert result.stdout.startswith("ok \ufffd")
        assert "\ufffd" in result.stderr
        assert conn.run("echo still-alive").exit_code == 0


def test_plain_text_frame_runs_as_a_command(agent: RunningAgent) -> None:
    ws = _raw(agent)
    try:
        ws.send("echo plain text")
        messages = _until(ws, "exit")
    finally:
        ws.close()
    started = messages[0]
    assert started["type"] == "started"
    assert started["argv"] == ["echo", "plain", "text"]
    assert messages[-1]["code"] == 0
    assert messages[-1]["id"] == started["id"]


@pytest.mark.parametrize(
    "command",
    [
        "echo x; touch {f}",
        "echo x && touch {f}",
        "echo x | touch {f}",
        "echo `touch {f}`",
        "echo $(touch {f})",
        "echo x\ntouch {f}",
        "echo 'x'; touch \"{f}\"",
        "echo x || touch {f} &",
    ],
)
def test_shell_syntax_reaches_gam_as_literal_arguments(
    agent: RunningAgent, side_effect_dir: Path, command: str
) -> None:
    marker = side_effect_dir / "injected"
    with SessionConnection.open(agent.url, TOKEN) as conn:
        result = conn.run(command.format(f=marker))
    assert result.exit_code == 0
    args = json.loads(result.stdout)
    assert str(marker) in " ".join(args)
    assert not marker.exists()


def test_empty_command_is_a_bad_request(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        with pytest.raises(CommandRejectedError) as info:
            conn.run("  gam  ")
        assert info.value.code == "bad_request"
        assert info.value.message == "empty command"


def test_malformed_json_and_unknown_type_get_bad_request_and_the_connection_stays(
    agent: RunningAgent,
) -> None:
    ws = _raw(agent)
    try:
        ws.send('{"type": "command", "id": "x"')
        error = json.loads(ws.recv())
        assert error["type"] == "error"
        assert error["code"] == "bad_request"
        assert error["message"].startswith("malformed JSON")
        ws.send('{"type": "shutdown", "id": "u1"}')
        error = json.loads(ws.recv())
        assert error == {
            "type": "error",
            "code": "bad_request",
            "id": "u1",
            "message": "unknown message type 'shutdown'; expected one of: "
            + ", ".join(CLIENT_MESSAGE_TYPES),
        }
        ws.send('{"type": "ping", "id": "p"}')
        assert json.loads(ws.recv()) == {"type": "pong", "id": "p"}
    finally:
        ws.close()


def test_binary_frame_gets_bad_request(agent: RunningAgent) -> None:
    ws = _raw(agent)
    try:
        ws.send_binary(b"\x00\x01")
        error = json.loads(ws.recv())
        assert error["code"] == "bad_request"
        assert "binary frames" in error["message"]
    finally:
        ws.close()


def test_oversize_message_closes_with_1009_and_the_agent_survives(agent: RunningAgent) -> None:
    ws = _raw(agent)
    ws.send('{"type":"command","command":"echo ' + "x" * MAX_MESSAGE_BYTES + '"}')
    opcode, data = ws.recv_data(control_frame=True)
    ws.close()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1009
    assert agent.health()["status"] == "ok"


def test_second_command_while_busy_gets_busy_and_another_client_may_cancel_it(
    agent: RunningAgent, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    with SessionConnection.open(agent.url, TOKEN) as first:
        chunks = first.stream(["pidfile", str(pidfile), "30"])
        assert next(chunks).data.startswith("ready")
        assert agent.health()["busy"] is True
        with SessionConnection.open(agent.url, TOKEN) as second:
            assert second.welcome.busy is True
            with pytest.raises(CommandRejectedError) as info:
                second.run("echo hi")
            assert info.value.code == "busy"
            assert "a command is already running" in info.value.message
            # Any authenticated client of the session may cancel it.
            second._send('{"type":"cancel"}')
            assert "".join(c.data for c in chunks).strip() == ""
        assert first.last_exit is not None
        assert first.last_exit.cancelled is True
        assert first.last_exit.code == 128 + 15
    pid = int(pidfile.read_text())
    _wait_for(lambda: not _alive(pid))


def test_cancel_with_no_command_is_a_bad_request(agent: RunningAgent) -> None:
    ws = _raw(agent)
    try:
        ws.send('{"type":"cancel","id":"k1"}')
        error = json.loads(ws.recv())
    finally:
        ws.close()
    assert error == {
        "type": "error",
        "code": "bad_request",
        "id": "k1",
        "message": "no command is running",
    }


def test_client_timeout_cancels_and_the_connection_is_reusable(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        with pytest.raises(CommandTimeoutError, match=r"did not finish within 0\.5s"):
            conn.run("sleep 30", timeout=0.5)
        assert conn.run("echo after").exit_code == 0


def test_a_vanished_clients_command_is_killed_after_the_detach_timeout(
    agent: RunningAgent, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    ws = _raw(agent)
    ws.send(json.dumps({"type": "command", "id": "v", "argv": ["pidfile", str(pidfile), "60"]}))
    _until(ws, "output")
    pid = int(pidfile.read_text())
    assert _alive(pid)
    ws.sock.close()  # vanish without a close frame
    _wait_for(lambda: not _alive(pid))
    _wait_for(lambda: agent.health()["busy"] is False)
    # It ran on detached until the detach timeout, then was cancelled.
    assert [e["id"] for e in agent.events("command_detached")][-1] == "v"
    assert [e["id"] for e in agent.events("detach_timeout")][-1] == "v"
    with SessionConnection.open(agent.url, TOKEN) as conn:
        assert conn.run("echo alive").exit_code == 0


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path, fake_gam: str) -> None:
    pidfile = tmp_path / "pid"
    with (
        running_agent("kill-me", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam) as agent,
        SessionConnection.open(agent.url, TOKEN) as conn,
    ):
        chunks = conn.stream(["ignoreterm", str(pidfile), "60"])
        assert next(chunks).data.startswith("ready")
        conn.cancel()
        assert "".join(c.data for c in chunks).strip() == ""
        assert conn.last_exit is not None
        assert conn.last_exit.code == 128 + 9
    assert not _alive(int(pidfile.read_text()))


def test_gam_never_sees_the_session_token(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        assert conn.run("env SESSION_TOKEN").stdout == "<unset>\n"
        assert conn.run("env GAMCFGDIR").stdout.strip() == str(agent.gam_config_dir)


def test_stream_yields_chunks_before_the_command_ends(agent: RunningAgent, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with SessionConnection.open(agent.url, TOKEN) as conn:
        chunks = conn.stream(["pidfile", str(pidfile), "30"])
        first = next(chunks)
        assert first.stream == "stdout" and first.data.startswith("ready")
        assert conn.last_exit is None
        conn.cancel()
        list(chunks)


def test_closing_the_client_mid_run_from_another_thread_is_a_lost_connection(
    agent: RunningAgent,
) -> None:
    conn = SessionConnection.open(agent.url, TOKEN)
    timer = threading.Timer(0.5, lambda: conn._ws.sock.shutdown(2))
    timer.start()
    try:
        with pytest.raises(ConnectionLostError) as info:
            conn.run("sleep 30")
        assert "Failed to connect to session" in str(info.value)
    finally:
        timer.cancel()
        conn.close()
    _wait_for(lambda: agent.health()["busy"] is False)
