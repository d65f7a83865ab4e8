"""Before the upgrade: health, path and token checks, typed client errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.errors import (
    HandshakeRejectedError,
    SessionConnectError,
    SessionUnauthorizedError,
)
from tests.agent.conftest import SESSION_ID, TOKEN
from tests.support.agents import RunningAgent, free_port


def _raw_status(
    url: str, headers: list[str], subprotocols: list[str] | None = None
) -> tuple[int, dict[str, str]]:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, header=headers, subprotocols=subprotocols, timeout=5)
    return info.value.status_code, json.loads(info.value.resp_body)


def test_healthz_answers_json_with_the_session_state(agent: RunningAgent) -> None:
    health = agent.health()
    assert health["status"] == "ok"
    assert health["session_id"] == SESSION_ID
    assert health["busy"] is False
    assert health["credentials_found"] is False
    assert isinstance(health["last_activity"], float)
    assert isinstance(health["uptime_s"], float)


def test_health_probes_do_not_count_as_activity(agent: RunningAgent) -> None:
    before = agent.health()["last_activity"]
    for _ in range(3):
        agent.health()
    assert agent.health()["last_activity"] == before


def test_bearer_header_opens_the_session_with_the_subprotocol(agent: RunningAgent) -> None:
    ws = websocket.create_connection(
        agent.url,
        header=[f"Authorization: Bearer {TOKEN}"],
        subprotocols=[naming.SUBPROTOCOL],
        timeout=5,
    )
    try:
        assert ws.getsubprotocol() == naming.SUBPROTOCOL
        welcome = json.loads(ws.recv())
        assert welcome["type"] == "welcome"
        assert welcome["session_id"] == SESSION_ID
    finally:
        ws.close()


def test_token_as_a_second_subprotocol_entry_opens_the_session(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN, token_in_subprotocol=True) as conn:
        assert conn.welcome.session_id == SESSION_ID
        assert conn.ping() >= 0


def test_missing_token_gets_401_json(agent: RunningAgent) -> None:
    status, body = _raw_status(agent.url, [], [naming.SUBPROTOCOL])
    assert status == 401
    assert body == {"error": "missing or invalid token", "code": "unauthorized"}


def test_wrong_token_gets_401_and_a_typed_client_error_without_the_token(
    agent: RunningAgent,
) -> None:
    with pytest.raises(SessionUnauthorizedError) as info:
        SessionConnection.open(agent.url, "not-the-token")
    assert info.value.status == 401
    assert info.value.code == "unauthorized"
    assert "the token was refused" in str(info.value)
    assert "not-the-token" not in str(info.value)


def test_token_in_the_query_string_is_not_accepted(agent: RunningAgent) -> None:
    status, _ = _raw_status(f"{agent.url}?token={TOKEN}", [])
    assert status == 401


def test_token_of_another_session_gets_401(agent: RunningAgent) -> None:
    with pytest.raises(SessionUnauthorizedError):
        SessionConnection.open(agent.url, TOKEN + "-other-session")


def test_another_session_id_in_the_path_gets_404(agent: RunningAgent) -> None:
    url = agent.url.replace(SESSION_ID, "sess-b")
    with pytest.raises(HandshakeRejectedError) as info:
        SessionConnection.open(url, TOKEN)
    assert not isinstance(info.value, SessionUnauthorizedError)
    assert info.value.status == 404
    assert info.value.code == "not_found"
    assert "Error joining session" in str(info.value)


@pytest.mark.parametrize("path", ["/", "/ws/session/", f"/ws/session/{SESSION_ID}", "/etc/passwd"])
def test_other_paths_get_404(agent: RunningAgent, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{agent.http_url}{path}", timeout=5)  # noqa: S310
    assert info.value.code == 404
    assert json.loads(info.value.read())["code"] == "not_found"


def test_nothing_listening_is_a_connect_error() -> None:
    url = f"ws://127.0.0.1:{free_port()}{naming.session_path('nobody')}"
    with pytest.raises(SessionConnectError) as info:
        SessionConnection.open(url, TOKEN, timeout=2)
    assert "Failed to connect to session" in str(info.value)
    assert TOKEN not in str(info.value)


def test_a_server_that_never_welcomes_is_a_connect_error(tmp_path: Path) -> None:
    """A WebSocket server that is not an agent: accepts, then says nothing."""
    import asyncio
    import threading

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.typing import Subprotocol

    port = free_port()
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []

    async def silent(connection: ServerConnection) -> None:
        async for _ in connection:  # never answers; ends when the client goes
            pass

    async def main() -> None:
        async with serve(silent, "127.0.0.1", port, subprotocols=[Subprotocol(naming.SUBPROTOCOL)]):
            stop.append(asyncio.get_running_loop().create_future())
            ready.set()
            await stop[0]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        url = f"ws://127.0.0.1:{port}{naming.session_path('silent')}"
        with pytest.raises(SessionConnectError, match=r"sent no welcome within 1\.0s"):
            SessionConnection.open(url, TOKEN, timeout=1.0)
    finally:
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(10)
