"""docs/protocol.schema.json is current, and every frame of a real exchange satisfies it.

The schema is what a TypeScript (or any) client is generated from, so it must
say exactly what travels: the test records every frame the client sent and
received while talking to a real agent and validates each against the
published file (``ClientMessage`` one way, ``AgentMessage`` the other).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest

from session_runtime import client as sync_client
from session_runtime.client import SessionConnection
from session_runtime.conversation import Conversation
from session_runtime.errors import CommandRejectedError
from session_runtime.protocol import AGENT_MESSAGE_TYPES, json_schema
from tests.support.agents import RunningAgent, running_agent
from tests.support.fake_gam import fake_gam_bin

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "docs" / "protocol.schema.json"
TOKEN = "schema-test-token-0c1d"


def _published() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return data


def test_the_published_schema_is_what_the_command_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "session_runtime.protocol", "--schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    assert json.loads(printed) == _published(), (
        "docs/protocol.schema.json is stale: "
        "python -m session_runtime.protocol --schema > docs/protocol.schema.json"
    )
    assert _published() == json.loads(json.dumps(json_schema()))


def test_the_published_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(_published())


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = _published()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    )


class _Recorder(Conversation):
    """A conversation that keeps a copy of every frame in and out."""

    received: ClassVar[list[str]] = []
    sent: ClassVar[list[str]] = []

    def receive_frame(self, frame: str | bytes) -> list[Any]:
        self.received.append(frame.decode() if isinstance(frame, bytes) else frame)
        return super().receive_frame(frame)

    def data_to_send(self) -> list[str]:
        frames = super().data_to_send()
        self.sent.extend(frames)
        return frames


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    _Recorder.received, _Recorder.sent = [], []
    monkeypatch.setattr(sync_client, "Conversation", _Recorder)
    return _Recorder


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    gam = fake_gam_bin(tmp_path_factory.mktemp("schema-gam"))
    with running_agent(
        "schema", TOKEN, tmp_path=tmp_path_factory.mktemp("schema-agent"), gam_bin=gam
    ) as running:
        yield running


def _exchange(agent: RunningAgent) -> None:
    """Talk to the agent with every kind of message the client sends."""
    with SessionConnection.open(agent.url, TOKEN) as conn:
        conn.ping()
        conn.run("version")
        conn.run(["stderr", "warn"])
        with conn.command(["sleep", "30"]) as cmd:
            next(cmd.chunks())
            cmd.cancel()
            list(cmd.chunks())
        with pytest.raises(CommandRejectedError):
            conn.run("  gam  ")  # empty: bad_request
        with conn.command(["echo", "in"], stdin=True) as cmd:
            cmd.result()
        if conn.conversation.supports_resume:  # v1.1: attach replays the finished command
            with conn.attach(cmd.id) as again:
                again.result()


def test_every_frame_of_a_real_exchange_satisfies_the_schema(
    agent: RunningAgent, recorded: type[_Recorder]
) -> None:
    _exchange(agent)
    agent_validator = _validator("AgentMessage")
    client_validator = _validator("ClientMessage")
    for frame in recorded.received:
        agent_validator.validate(json.loads(frame))
    for frame in recorded.sent:
        client_validator.validate(json.loads(frame))
    seen = {json.loads(f)["type"] for f in recorded.received}
    assert {"welcome", "started", "output", "exit", "error", "pong"} <= seen
    assert seen <= set(AGENT_MESSAGE_TYPES)
    assert {json.loads(f)["type"] for f in recorded.sent} >= {"ping", "command", "cancel"}


@pytest.mark.parametrize(
    ("definition", "frame"),
    [
        ("AgentMessage", {"type": "output", "id": "c", "stream": "stdout", "data": "x", "seq": 0}),
        ("AgentMessage", {"type": "gap", "id": "c", "from_seq": 0, "to_seq": 2}),
        ("AgentMessage", {"type": "telepathy"}),
        ("ClientMessage", {"type": "attach", "id": "c", "after_seq": -1}),
        ("ClientMessage", {"type": "resize", "id": "c", "cols": 0, "rows": 24}),
        ("ClientMessage", {"type": "command", "id": "c", "command": "x", "shell": True}),
    ],
)
def test_the_schema_refuses_what_the_models_refuse(
    definition: str, frame: dict[str, object]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validator(definition).validate(frame)
