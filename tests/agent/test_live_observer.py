"""The observer hears every event: connect, refusals, commands with bytes, attach, cancel, detach.

The agent's server runs in-process here (the fake GAM is still a real
process) so a recording observer can be handed to the session.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from session_runtime import naming
from session_runtime.agent.config import AgentConfig
from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.agent.server import SessionServer
from session_runtime.agent.session import Session

TOKEN = "observer-token-77"
SID = "obs"


class Recorder:
    """An AgentObserver that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def named(self, name: str) -> list[tuple[object, ...]]:
        return [args for call, args in self.calls if call == name]

    def connected(self, client: ClientInfo) -> None:
        self.calls.append(("connected", (client,)))

    def disconnected(self, client: ClientInfo, close_code: int | None) -> None:
        self.calls.append(("disconnected", (client, close_code)))

    def rejected(self, client: ClientInfo, status: int, reason: str) -> None:
        host = (client.client or "").rsplit(":", 1)[0]  # a direct peer is host:port
        self.calls.append(("rejected", (host, status, reason)))

    def command_started(self, command: CommandInfo) -> None:
        self.calls.append(("command_started", (command,)))

    def command_finished(self, command: CommandInfo, outcome: RunOutcome, bytes_out: int) -> None:
        self.calls.append(("command_finished", (command, outcome, bytes_out)))

    def attached(self, client: ClientInfo, command_id: str, after_seq: int) -> None:
        self.calls.append(("attached", (client, command_id, after_seq)))

    def cancel_requested(self, client: ClientInfo | None, command_id: str, reason: str) -> None:
        self.calls.append(("cancel_requested", (client, command_id, reason)))


async def _eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _until(ws: ClientConnection, kind: str) -> list[dict[str, object]]:
    seen = []
    while True:
        message = json.loads(await ws.recv())
        seen.append(message)
        if message["type"] == kind:
            return seen


Scenario = Callable[[str, Recorder], Awaitable[None]]


def _run(
    tmp_path: Path, fake_gam: str, scenario: Scenario, command_timeout_s: float = 0
) -> Recorder:
    recorder = Recorder()

    async def main() -> None:
        config = AgentConfig(
            session_id=SID,
            token=SecretStr(TOKEN),
            host="127.0.0.1",
            port=0,
            gam_bin=fake_gam,
            gam_config_dir=tmp_path,
            detach_timeout_s=0.3,
            kill_grace_s=1.0,
            command_timeout_s=command_timeout_s,
        )
        server = SessionServer(Session(config, [], recorder))
        async with serve(
            server.handle,
            "127.0.0.1",
            0,
            process_request=server.process_request,
            select_subprotocol=server.select_subprotocol,
        ) as ws_server:
            port = next(iter(ws_server.sockets)).getsockname()[1]
            await scenario(f"ws://127.0.0.1:{port}{naming.session_path(SID)}", recorder)

    asyncio.run(main())
    return recorder


def _open(url: str, **headers: str) -> connect:
    return connect(
        url,
        additional_headers={"Authorization": f"Bearer {TOKEN}", **headers},
        subprotocols=[naming.SUBPROTOCOL],  # type: ignore[list-item]
    )


def test_connect_command_attach_and_disconnect_are_reported_with_who(
    tmp_path: Path, fake_gam: str
) -> None:
    async def scenario(url: str, recorder: Recorder) -> None:
        headers = {"X-Forwarded-For": "203.0.113.7, 10.1.1.1", naming.HEADER_USER: "alice@x.org"}
        async with _open(url, **headers) as alice, _open(url) as bob:
            await alice.recv()
            await bob.recv()
            await alice.send(json.dumps({"type": "command", "id": "c1", "argv": ["spam", "1000"]}))
            await _until(alice, "exit")
            await bob.send(json.dumps({"type": "attach", "id": "c1", "after_seq": 0}))
            await _until(bob, "exit")
        await _eventually(lambda: len(recorder.named("disconnected")) == 2)

    recorder = _run(tmp_path, fake_gam, scenario)
    alice, bob = (args[0] for args in recorder.named("connected"))
    assert isinstance(alice, ClientInfo) and isinstance(bob, ClientInfo)
    # Connected directly (no proxy): the peer is the client, the claimed chain kept apart.
    assert alice.client.startswith("127.0.0.1:") and alice.user == "alice@x.org"
    assert alice.forwarded_for == ("203.0.113.7", "10.1.1.1")
    assert bob.client.startswith("127.0.0.1:") and bob.user is None
    assert alice.connection_id != bob.connection_id
    [(started,)] = recorder.named("command_started")
    assert isinstance(started, CommandInfo)
    assert started.command_id == "c1" and started.argv == ("spam", "1000")
    assert started.started_by == alice and not started.initial
    [(finished, outcome, bytes_out)] = recorder.named("command_finished")
    assert finished == started
    assert isinstance(outcome, RunOutcome) and outcome.code == 0
    assert bytes_out == 1000
    assert recorder.named("attached") == [(bob, "c1", 0)]
    assert {args[0] for args in recorder.named("disconnected")} == {alice, bob}
    assert {args[1] for args in recorder.named("disconnected")} == {1000}
    order = [call for call, _ in recorder.calls]
    assert order.index("connected") < order.index("command_started")
    assert order.index("command_started") < order.index("command_finished")


def test_cancel_by_another_client_and_the_detach_timeout_are_reported_with_why(
    tmp_path: Path, fake_gam: str
) -> None:
    async def scenario(url: str, recorder: Recorder) -> None:
        async with _open(url) as alice, _open(url) as bob:
            await alice.recv()
            await bob.recv()
            await alice.send(json.dumps({"type": "command", "id": "k1", "argv": ["sleep", "30"]}))
            await _until(alice, "output")
            await bob.send(json.dumps({"type": "cancel", "id": "k1"}))
            exit_message = (await _until(alice, "exit"))[-1]
            assert exit_message["cancelled"] is True
            await alice.send(json.dumps({"type": "command", "id": "d1", "argv": ["sleep", "30"]}))
            await _until(alice, "output")
        await _eventually(lambda: len(recorder.named("command_finished")) == 2)

    recorder = _run(tmp_path, fake_gam, scenario)
    bob = recorder.named("connected")[1][0]
    assert recorder.named("cancel_requested") == [
        (bob, "k1", "cancelled"),
        (None, "d1", "detached"),
    ]
    outcomes = [args[1] for args in recorder.named("command_finished")]
    assert [(o.cancelled, o.detached) for o in outcomes] == [(True, False), (False, True)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "refusal",
    [
        (naming.session_path(SID), "wrong", 401, "token"),
        ("/ws/session/other/", TOKEN, 404, "path"),
    ],
)
def test_refused_handshakes_are_reported(
    tmp_path: Path, fake_gam: str, refusal: tuple[str, str, int, str]
) -> None:
    path, token, status, reason = refusal

    async def scenario(url: str, recorder: Recorder) -> None:
        base = url.split("/ws/", 1)[0]
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                base + path, additional_headers={"Authorization": f"Bearer {token}"}
            ):
                pass
        assert info.value.response.status_code == status

    recorder = _run(tmp_path, fake_gam, scenario)
    assert recorder.named("rejected") == [("127.0.0.1", status, reason)]
    assert recorder.named("connected") == []


def test_a_command_stopped_by_the_command_timeout_is_reported_as_timed_out(
    tmp_path: Path, fake_gam: str
) -> None:
    async def scenario(url: str, recorder: Recorder) -> None:
        async with _open(url) as alice:
            await alice.recv()
            await alice.send(json.dumps({"type": "command", "id": "t1", "argv": ["sleep", "30"]}))
            exit_message = (await _until(alice, "exit"))[-1]
            assert exit_message["timed_out"] is True

    recorder = _run(tmp_path, fake_gam, scenario, command_timeout_s=0.3)
    assert recorder.named("cancel_requested") == [(None, "t1", "timed_out")]
    [(_, outcome, _)] = recorder.named("command_finished")
    assert outcome.timed_out is True  # type: ignore[attr-defined]
