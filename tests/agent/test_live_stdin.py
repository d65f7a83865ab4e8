"""Input to running commands: ``gam batch -`` fed over the wire, EOF, refusals, two writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent, running_agent
from tests.support.live import Peer


def _error_for(peer: Peer, command_id: str) -> dict[str, object]:
    return peer.until(lambda m: m["type"] == "error" and m.get("id") == command_id)[-1]


def test_batch_dash_fed_two_lines_and_eof_runs_both(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="b1", argv=["batch", "-"], stdin=True)
        started = peer.recv()
        peer.send(type="stdin", id="b1", data="echo first line\n")
        peer.send(type="stdin", id="b1", data="echo second\n")
        peer.send(type="stdin", id="b1", eof=True)
        frames = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert started["type"] == "started" and started["stdin"] is True
    assert [f for f in frames if f["type"] == "error"] == []
    out = "".join(str(f["data"]) for f in frames if f["type"] == "output")
    assert [json.loads(line) for line in out.splitlines()] == [["first", "line"], ["second"]]
    assert frames[-1]["code"] == 0


def test_input_sent_with_the_command_before_it_started_waits_for_its_process(
    agent: RunningAgent,
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:  # no wait for "started": the input races the spawn and must still arrive, in order
        peer.send(type="command", id="b0", argv=["cat"], stdin=True)
        for i in range(5):
            peer.send(type="stdin", id="b0", data=f"line {i}\n")
        peer.send(type="stdin", id="b0", eof=True)
        frames = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert [f for f in frames if f["type"] == "error"] == []
    out = "".join(str(f["data"]) for f in frames if f["type"] == "output")
    assert out == "".join(f"line {i}\n" for i in range(5))
    assert frames[-1]["code"] == 0


def test_stdin_after_eof_is_refused_clearly(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="e1", argv=["cat"], stdin=True)
        peer.send(type="stdin", id="e1", eof=True)
        peer.send(type="stdin", id="e1", data="too late\n")
        error = _error_for(peer, "e1")
        peer.send(type="stdin", id="e1", eof=True)
        second = _error_for(peer, "e1")
        exit_message = peer.until(lambda m: m["type"] == "exit")[-1]
    finally:
        peer.close()
    for refused in (error, second):
        assert refused["code"] == "bad_request"
        assert refused["message"] == "the input of command 'e1' is closed (EOF was sent)"
    assert exit_message["code"] == 0


def test_stdin_to_a_command_without_stdin_is_refused(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="n1", argv=["sleep", "5"])
        peer.until(lambda m: m["type"] == "output")
        peer.send(type="stdin", id="n1", data="x\n")
        error = _error_for(peer, "n1")
        peer.send(type="cancel", id="n1")
        peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert error["code"] == "bad_request"
    assert error["message"] == (
        """command 'n1' was not started with "stdin": true; its stdin is /dev/null"""
    )


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "stdin", "id": "gone", "data": "x"}, "no command 'gone'"),
        ({"type": "resize", "id": "gone", "cols": 80, "rows": 24}, "no command 'gone'"),
    ],
)
def test_input_to_an_unknown_command_is_refused(
    agent: RunningAgent, message: dict[str, object], text: str
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(**message)
        error = peer.recv()
    finally:
        peer.close()
    assert error == {"type": "error", "code": "bad_request", "id": "gone", "message": text}


def test_stdin_to_a_finished_command_is_refused(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="f1", argv=["cat"], stdin=True)
        peer.send(type="stdin", id="f1", eof=True)
        peer.until(lambda m: m["type"] == "exit")
        peer.send(type="stdin", id="f1", data="after the end\n")
        error = peer.recv()
    finally:
        peer.close()
    assert error["code"] == "bad_request"
    assert error["message"] == "command 'f1' has finished; it takes no more input"


def test_two_clients_typing_into_one_command_are_both_accepted_in_arrival_order(
    agent: RunningAgent,
) -> None:
    alice = Peer(agent.url, TOKEN)
    bob = Peer(agent.url, TOKEN)
    try:
        alice.send(type="command", id="t1", argv=["cat"], stdin=True)
        alice.until(lambda m: m["type"] == "started")
        bob.send(type="attach", id="t1", after_seq=0)
        bob.until(lambda m: m["type"] == "started")
        echoed = ""
        for writer, line in ((alice, "a1\n"), (bob, "b1\n"), (alice, "a2\n"), (bob, "b2\n")):
            writer.send(type="stdin", id="t1", data=line)
            expected = echoed + line
            while echoed != expected:  # each line is echoed before the next is typed
                message = alice.recv()
                assert message["type"] == "output", message
                echoed += str(message["data"])
        bob.send(type="stdin", id="t1", eof=True)
        exit_message = alice.until(lambda m: m["type"] == "exit")[-1]
        bob_frames = bob.until(lambda m: m["type"] == "exit")
    finally:
        alice.close()
        bob.close()
    assert echoed == "a1\nb1\na2\nb2\n"
    assert exit_message["code"] == 0
    assert "".join(str(f["data"]) for f in bob_frames if f["type"] == "output") == echoed


def test_real_gam_batch_dash_fed_two_lines_and_eof_runs_both(tmp_path: Path) -> None:
    with running_agent("gam-batch", TOKEN, tmp_path=tmp_path) as agent:  # the real gam7
        peer = Peer(agent.url, TOKEN, timeout=120)
        try:
            peer.send(type="command", id="g1", argv=["batch", "-"], stdin=True)
            peer.send(type="stdin", id="g1", data="gam version\n")
            peer.send(type="stdin", id="g1", data="gam version simple\n")
            peer.send(type="stdin", id="g1", eof=True)
            frames = peer.until(lambda m: m["type"] == "exit")
        finally:
            peer.close()
    text = "".join(str(f["data"]) for f in frames if f["type"] == "output")
    assert [f for f in frames if f["type"] == "error"] == []
    assert "Processing item 2/2" in text and "Processing complete" in text
    assert "GAM 7." in text
    assert frames[-1]["code"] == 0


def test_a_cancel_is_not_stuck_behind_input_the_command_does_not_read(
    agent: RunningAgent,
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="h1", argv=["sleep", "60"], stdin=True)
        peer.until(lambda m: m["type"] == "output")
        chunk = "y" * 60_000 + "\n"
        for _ in range(3):  # more than the pipe holds: the last write waits in the agent
            peer.send(type="stdin", id="h1", data=chunk)
        peer.send(type="cancel", id="h1")
        frames = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert frames[-1]["cancelled"] is True
    errors = [f for f in frames if f["type"] == "error"]
    assert all(str(e["message"]).startswith("the input of command 'h1' is closed") for e in errors)
