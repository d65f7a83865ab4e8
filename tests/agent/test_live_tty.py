"""Commands under a terminal: started with ``tty``, stdin implied, ``resize``, refusals.

The pseudo-terminal itself is the runner's; the tests that need it skip (saying
so) on a runner without one, and pass once it is there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from session_runtime.agent.runner import CommandRun
from session_runtime.protocol import TtySize
from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent
from tests.support.live import Peer


async def _discard(stream: str, data: str) -> None:
    """A sink for the probe below."""


def _runner_has_pty() -> bool:
    run = CommandRun(
        ["true"], _discard, env={}, cwd=Path(), kill_grace_s=1, tty=TtySize(cols=80, rows=24)
    )
    try:
        run.resize(80, 24)
    except NotImplementedError:
        return False
    except Exception:  # e.g. "not started yet": the feature exists
        return True
    return True


needs_pty = pytest.mark.skipif(
    not _runner_has_pty(), reason="the runner does not run commands under a pty yet"
)


def _reports(frames: list[dict[str, object]]) -> list[dict[str, object]]:
    text = "".join(str(f["data"]) for f in frames if f["type"] == "output")
    return [json.loads(line) for line in text.replace("\r\n", "\n").splitlines() if line]


def test_resize_of_a_command_without_a_tty_is_a_bad_request(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="r1", argv=["cat"], stdin=True)
        peer.send(type="resize", id="r1", cols=100, rows=30)
        error = peer.until(lambda m: m["type"] == "error")[-1]
        peer.send(type="stdin", id="r1", eof=True)
        peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert error == {
        "type": "error",
        "code": "bad_request",
        "id": "r1",
        "message": """command 'r1' does not run under a terminal (start it with "tty")""",
    }


def test_a_tty_command_says_so_in_started_and_takes_input(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="t1", argv=["ttyinfo"], tty={"cols": 100, "rows": 30})
        started = peer.recv()
        peer.send(type="stdin", id="t1", data="\n")  # stdin is implied by tty
        peer.send(type="stdin", id="t1", eof=True)
        frames = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert started["type"] == "started"
    assert started["tty"] == {"cols": 100, "rows": 30} and started["stdin"] is True
    assert [f for f in frames if f["type"] == "error"] == []
    assert len(_reports(frames)) == 2
    assert frames[-1]["code"] == 0


@needs_pty
def test_a_tty_command_sees_a_terminal_of_the_size_asked_then_the_resized_one(
    agent: RunningAgent,
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="t2", argv=["ttyinfo"], tty={"cols": 100, "rows": 30})
        first = peer.until(lambda m: m["type"] == "output")
        peer.send(type="resize", id="t2", cols=120, rows=40)
        peer.send(type="stdin", id="t2", data="\n")
        second = peer.until(lambda m: m["type"] == "output" and "120" in str(m["data"]))
        peer.send(type="stdin", id="t2", data="\x04")  # ^D: EOF through the line discipline
        rest = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    outputs = [f for f in first + second + rest if f["type"] == "output"]
    assert {f["stream"] for f in outputs} == {"tty"}
    reports = _reports(first + second)
    assert reports[0] == {"stdin": True, "stdout": True, "cols": 100, "rows": 30}
    assert reports[-1] == {"stdin": True, "stdout": True, "cols": 120, "rows": 40}
    assert rest[-1]["code"] == 0


@pytest.mark.parametrize(
    ("size", "fragment"),
    [({"cols": 0, "rows": 24}, "cols"), ({"cols": 80, "rows": 100000}, "rows")],
)
def test_a_terminal_size_out_of_range_is_a_bad_request(
    agent: RunningAgent, size: dict[str, int], fragment: str
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="z1", argv=["ttyinfo"], tty=size)
        error = peer.recv()
    finally:
        peer.close()
    assert error["code"] == "bad_request" and error["id"] == "z1"
    assert fragment in str(error["message"])


@needs_pty
def test_ctrl_c_typed_into_a_tty_command_interrupts_it(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="i1", argv=["sleep", "60"], tty={"cols": 80, "rows": 24})
        peer.until(lambda m: m["type"] == "output" and "sleeping" in str(m["data"]))
        peer.send(type="stdin", id="i1", data="\x03")
        exit_message = peer.until(lambda m: m["type"] == "exit")[-1]
    finally:
        peer.close()
    assert exit_message["code"] == 128 + 2  # SIGINT, from the terminal's line discipline
    assert exit_message["cancelled"] is False
