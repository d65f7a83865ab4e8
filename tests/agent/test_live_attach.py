"""Live commands on a real agent: seq numbers, resume after drops, gaps, several readers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.protocol import PROTOCOL_REVISION
from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent, running_agent
from tests.support.live import Peer, Transcript, resume_scenario


def _ticks(n: int) -> str:
    return "".join(f"tick {i}\n" for i in range(1, n + 1))


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _assert_complete(transcript: Transcript, expected: str) -> None:
    """Exactly once, in order: seqs 1..n contiguous, the exit is n+1, the text is whole."""
    seqs = [m["seq"] for m in transcript.outputs]
    assert seqs == list(range(1, len(seqs) + 1))
    assert transcript.gaps == []
    assert transcript.exit is not None
    assert transcript.exit["code"] == 0
    assert transcript.exit["seq"] == len(seqs) + 1
    assert transcript.text == expected


@pytest.fixture(scope="module")
def detached_agent(
    tmp_path_factory: pytest.TempPathFactory, fake_gam: str
) -> Iterator[RunningAgent]:
    """An agent that never cancels detached commands and keeps only 2000 bytes per command."""
    env = {naming.ENV_DETACH_TIMEOUT: "0", naming.ENV_REPLAY_BYTES: "2000"}
    with running_agent(
        "live-small",
        TOKEN,
        tmp_path=tmp_path_factory.mktemp("small"),
        gam_bin=fake_gam,
        extra_env=env,
    ) as agent:
        yield agent


def test_output_and_exit_are_numbered_and_welcome_speaks_v1_1(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        assert peer.welcome["revision"] == PROTOCOL_REVISION
        assert peer.welcome["gam_mode"] in ("warm", "cold")
        peer.send(type="command", id="n1", argv=["ticks", "3", "0.05"])
        frames = peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    assert frames[0]["type"] == "started" and "seq" not in frames[0]
    transcript = Transcript()
    for message in frames:
        transcript.take(message, "n1")
    _assert_complete(transcript, _ticks(3))
    later = Peer(agent.url, TOKEN)
    later.close()
    listed = [c for c in later.welcome["commands"] if c["id"] == "n1"]
    assert listed == [
        {
            "id": "n1",
            "state": "finished",
            "last_seq": transcript.exit["seq"],
            "initial": False,
            "tty": False,
        }
    ]


def test_a_dropped_connection_resumes_with_attach_without_duplicates_or_holes(
    agent: RunningAgent,
) -> None:
    transcript = resume_scenario(
        lambda: Peer(agent.url, TOKEN), ["ticks", "30", "0.1"], drops=1, command_id="r1"
    )
    _assert_complete(transcript, _ticks(30))
    assert transcript.starts == 2  # started is the first reply to attach


def test_twenty_disconnects_in_one_command_lose_and_repeat_nothing(agent: RunningAgent) -> None:
    transcript = resume_scenario(
        lambda: Peer(agent.url, TOKEN), ["ticks", "60", "0.05"], drops=20, command_id="r20"
    )
    _assert_complete(transcript, _ticks(60))
    assert transcript.starts == 21


def test_welcome_lists_the_running_command_with_its_last_seq(agent: RunningAgent) -> None:
    starter = Peer(agent.url, TOKEN)
    try:
        starter.send(type="command", id="w1", argv=["ticks", "20", "0.1"])
        first = starter.until(lambda m: m["type"] == "output")[-1]
        other = Peer(agent.url, TOKEN)
        try:
            running = [c for c in other.welcome["commands"] if c["state"] == "running"]
            assert [c["id"] for c in running] == ["w1"]
            assert running[0]["last_seq"] >= first["seq"]
            assert other.welcome["busy"] is True
        finally:
            other.close()
        starter.send(type="cancel", id="w1")
        assert starter.until(lambda m: m["type"] == "exit")[-1]["cancelled"] is True
    finally:
        starter.close()


def test_several_clients_attached_to_one_command_all_get_all_of_it(agent: RunningAgent) -> None:
    starter = Peer(agent.url, TOKEN)
    follower = Peer(agent.url, TOKEN)
    try:
        starter.send(type="command", id="m1", argv=["ticks", "10", "0.05"])
        head = starter.until(lambda m: m["type"] == "output")
        follower.send(type="attach", id="m1", after_seq=0)
        seen = []
        for peer, already in ((starter, head), (follower, [])):
            transcript = Transcript()
            for message in already + peer.until(lambda m: m["type"] == "exit"):
                transcript.take(message, "m1")
            seen.append(transcript)
    finally:
        starter.close()
        follower.close()
    for transcript in seen:
        _assert_complete(transcript, _ticks(10))
    assert seen[0].outputs == seen[1].outputs and seen[0].exit == seen[1].exit


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"type": "attach", "id": "nope", "after_seq": 0}, "no command 'nope' to attach to"),
        ({"type": "attach", "id": "x", "after_seq": -1}, "greater than or equal to 0"),
    ],
)
def test_attach_to_an_unknown_id_or_a_bad_seq_is_a_bad_request(
    agent: RunningAgent, message: dict[str, object], fragment: str
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(**message)
        error = peer.recv()
    finally:
        peer.close()
    assert error["type"] == "error" and error["code"] == "bad_request"
    assert error["id"] == message["id"]
    assert fragment in str(error["message"])


def test_attach_beyond_the_last_seq_is_a_bad_request(agent: RunningAgent) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="b1", argv=["echo", "x"])
        exit_message = peer.until(lambda m: m["type"] == "exit")[-1]
        peer.send(type="attach", id="b1", after_seq=exit_message["seq"] + 5)
        error = peer.recv()
        # Attaching at the exit's seq replays nothing but the start.
        peer.send(type="attach", id="b1", after_seq=exit_message["seq"])
        started = peer.recv()
        peer.send(type="ping", id="p")
        pong = peer.recv()
    finally:
        peer.close()
    assert error["code"] == "bad_request" and "beyond the last seq" in str(error["message"])
    assert started["type"] == "started" and started["id"] == "b1"
    assert pong == {"type": "pong", "id": "p"}


def test_a_finished_command_stays_attachable_and_replays_with_its_exit(
    agent: RunningAgent,
) -> None:
    peer = Peer(agent.url, TOKEN)
    try:
        peer.send(type="command", id="f1", argv=["ticks", "3", "0"])
        peer.until(lambda m: m["type"] == "exit")
    finally:
        peer.close()
    again = Peer(agent.url, TOKEN)
    try:
        again.send(type="attach", id="f1", after_seq=1)
        frames = again.until(lambda m: m["type"] == "exit")
    finally:
        again.close()
    assert frames[0]["type"] == "started"
    assert [f["seq"] for f in frames[1:]] == list(range(2, len(frames) + 1))


def test_overflow_gives_a_late_reader_the_exact_gap_then_the_rest(
    detached_agent: RunningAgent,
) -> None:
    starter = Peer(detached_agent.url, TOKEN)
    starter.send(type="command", id="o1", argv=["ticks", "400", "0.002"])
    starter.until(lambda m: m["type"] == "output")
    starter.drop()  # nobody attached: the ring drops its oldest frames, GAM is not stalled
    _wait_for(lambda: detached_agent.health()["busy"] is False)
    late = Peer(detached_agent.url, TOKEN)
    try:
        late.send(type="attach", id="o1", after_seq=0)
        frames = late.until(lambda m: m["type"] == "exit")
    finally:
        late.close()
    assert frames[0]["type"] == "started"
    gap = frames[1]
    assert gap["type"] == "gap" and gap["from_seq"] == 1
    rest = frames[2:]
    assert rest[0]["seq"] == gap["to_seq"] + 1
    assert [f["seq"] for f in rest] == list(range(rest[0]["seq"], rest[0]["seq"] + len(rest)))
    assert rest[-1]["type"] == "exit" and rest[-1]["code"] == 0
    text = "".join(str(f["data"]) for f in rest[:-1])
    assert _ticks(400).endswith(text) and text.endswith("tick 400\n")
    assert sum(len(str(f["data"])) for f in rest[:-1]) < 2000


def test_a_client_that_never_reads_does_not_stall_another(agent: RunningAgent) -> None:
    total = 48 * 1024 * 1024
    starter = Peer(agent.url, TOKEN)
    idle = Peer(agent.url, TOKEN, timeout=60)
    try:
        starter.send(type="command", id="s1", argv=["spam", str(total)])
        starter.until(lambda m: m["type"] == "output")
        idle.send(type="attach", id="s1", after_seq=0)  # ...and reads nothing for now
        received = 0
        while True:
            message = starter.recv()
            if message["type"] == "exit":
                break
            received += len(str(message["data"]))
        assert message["code"] == 0
        # The laggard was left behind, not dropped: it reads on, told what it missed.
        transcript = Transcript()
        while transcript.exit is None:
            transcript.take(idle.recv(), "s1")
    finally:
        starter.close()
        idle.close()
    assert received + 64 * 1024 >= total  # everything after the first chunk
    assert transcript.starts == 1
    assert transcript.gaps  # it fell further behind than the buffer holds
    # What it got and what it was told it missed cover every seq exactly once, in order.
    seqs = [m["seq"] for m in transcript.outputs]
    assert seqs == sorted(seqs)
    missed = [s for g in transcript.gaps for s in range(g["from_seq"], g["to_seq"] + 1)]
    assert sorted(seqs + missed) == list(range(1, transcript.exit["seq"]))
    assert transcript.exit["code"] == 0


def test_a_detached_command_keeps_the_session_from_going_idle(
    tmp_path: Path, fake_gam: str
) -> None:
    env = {naming.ENV_IDLE_TIMEOUT: "1", naming.ENV_DETACH_TIMEOUT: "0"}
    with running_agent(
        "detached-idle", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
    ) as agent:
        peer = Peer(agent.url, TOKEN)
        peer.send(type="command", id="d1", argv=["sleep", "2.5"])
        peer.until(lambda m: m["type"] == "output")
        peer.drop()
        assert agent.wait_exit(timeout=20) == 0
    finished = agent.events("command_finished")[-1]
    assert finished["id"] == "d1" and finished["code"] == 0
    assert finished["cancelled"] is False and finished["detached"] is False
    assert agent.events("idle_timeout")[0]["ts"] >= finished["ts"]
