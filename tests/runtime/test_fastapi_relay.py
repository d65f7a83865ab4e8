"""The FastAPI relay of docs/runtime-api.md, exactly as printed, run by uvicorn on the local stack.

The test takes the ``relay.py`` block out of the page, starts it with uvicorn
(a subprocess, the local stack's settings in its environment) and drives it as
a browser would: create a session over HTTP, open the relay's WebSocket, run
commands, feed stdin, leave mid-command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from session_runtime.models import BackendSession
from tests.runtime.conftest import StackHandle
from tests.support.agents import free_port

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "runtime-api.md"
_START_TIMEOUT_S = 60


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    (relay,) = [b for b in blocks if b.startswith("# relay.py")]
    return relay


@pytest.fixture(scope="module")
def relay_url(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app_dir = tmp_path_factory.mktemp("relay")
    (app_dir / "relay.py").write_text(_example(), encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env.update(
        WEBSOCKET_BACKEND="local",
        WEBSOCKET_LOCAL_STATE_DIR=str(local_stack.state_dir),
        PYTHONPATH=str(ROOT),
    )
    log = (app_dir / "uvicorn.log").open("wb")
    argv = [sys.executable, "-m", "uvicorn", "relay:app", "--app-dir", str(app_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        argv,
        env=env,
        cwd=app_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/docs", timeout=2).close()  # noqa: S310 - loopback
                break
            except OSError:
                assert server.poll() is None, (app_dir / "uvicorn.log").read_text()
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)
        log.close()


def _ws(relay_url: str, session_id: str) -> websocket.WebSocket:
    url = relay_url.replace("http://", "ws://") + f"/sessions/{session_id}/ws"
    return websocket.create_connection(url, timeout=30)


def _until_exit(ws: websocket.WebSocket) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    while not seen or seen[-1]["type"] not in ("exit", "error"):
        seen.append(json.loads(ws.recv()))
    return seen


def _post(url: str, method: str = "POST") -> dict[str, object]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        data: dict[str, object] = json.loads(response.read())
        return data


def test_the_relay_creates_a_session_and_closes_it(relay_url: str) -> None:
    created = _post(f"{relay_url}/sessions/relay-made")
    assert created["session_id"] == "relay-made" and created["status"] == "ready"
    assert "token" not in created
    assert _post(f"{relay_url}/sessions/relay-made", "DELETE") == {"closed": True}


def test_a_command_streams_through_the_relay_in_order(
    relay_url: str, fake_session: BackendSession
) -> None:
    ws = _ws(relay_url, fake_session.session_id)
    try:
        ws.send(json.dumps({"type": "command", "command": "ticks 5 0.05"}))
        frames = _until_exit(ws)
    finally:
        ws.close()
    assert frames[0]["type"] == "started"
    output = [f for f in frames if f["type"] == "output"]
    assert "".join(str(f["data"]) for f in output) == "".join(f"tick {i}\n" for i in range(1, 6))
    # A slow read may join two ticks into one frame: the seqs count frames, not lines.
    assert [f["seq"] for f in output] == list(range(1, len(output) + 1))
    assert frames[-1]["type"] == "exit" and frames[-1]["code"] == 0


def test_stdin_and_eof_reach_the_command_through_the_relay(
    relay_url: str, fake_session: BackendSession
) -> None:
    ws = _ws(relay_url, fake_session.session_id)
    try:
        ws.send(json.dumps({"type": "command", "command": "batch -", "stdin": True}))
        ws.send(json.dumps({"type": "stdin", "data": "echo one\n"}))
        ws.send(json.dumps({"type": "stdin", "eof": True}))
        frames = _until_exit(ws)
        ws.send(json.dumps({"type": "stdin", "data": "too late\n"}))  # command has ended
        refused = json.loads(ws.recv())
    finally:
        ws.close()
    assert "".join(str(f["data"]) for f in frames if f["type"] == "output") == '["one"]\n'
    assert refused["type"] == "error"


def test_an_unknown_session_is_an_error_message_then_a_close(relay_url: str) -> None:
    ws = _ws(relay_url, "relay-nobody")
    try:
        error = json.loads(ws.recv())
    finally:
        ws.close()
    assert error["type"] == "error" and error["error"] == "SessionNotFoundError"


def test_leaving_the_relay_mid_command_cancels_it(
    relay_url: str, fake_session: BackendSession, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    ws = _ws(relay_url, fake_session.session_id)
    ws.send(json.dumps({"type": "command", "command": f"pidfile {pidfile} 60"}))
    while json.loads(ws.recv())["type"] != "output":
        pass
    ws.close()
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the command outlived the browser that left")
