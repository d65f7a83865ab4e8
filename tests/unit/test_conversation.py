"""The client conversation, driven by frames alone: every rule, and the frames that break them."""

from __future__ import annotations

import json

import pytest

from session_runtime.conversation import Conversation
from session_runtime.errors import CommandRejectedError, ConnectionLostError, ProtocolError
from session_runtime.protocol import (
    ErrorMessage,
    ExitMessage,
    GapMessage,
    OutputMessage,
    PongMessage,
    StartedMessage,
    TtySize,
)

WELCOME_V1 = {"type": "welcome", "session_id": "s", "agent_version": "1"}
WELCOME_V11 = {**WELCOME_V1, "revision": "1.1"}


def frame(**fields: object) -> str:
    return json.dumps(fields)


def welcomed(welcome: dict[str, object] | None = None) -> Conversation:
    conv = Conversation(id_prefix="t-")
    conv.receive_frame(json.dumps(welcome or WELCOME_V11))
    return conv


def sent(conv: Conversation) -> list[dict[str, object]]:
    return [json.loads(f) for f in conv.data_to_send()]


def events(conv: Conversation) -> list[object]:
    out = []
    while (event := conv.next_event()) is not None:
        out.append(event)
    return out


def started(conv: Conversation, cid: str, **extra: object) -> None:
    conv.receive_frame(frame(type="started", id=cid, argv=["x"], **extra))


def output(cid: str, data: str, seq: int | None = None, **extra: object) -> str:
    fields: dict[str, object] = {"type": "output", "id": cid, "stream": "stdout", "data": data}
    if seq is not None:
        fields["seq"] = seq
    return frame(**fields, **extra)


def exit_frame(cid: str, seq: int | None = None, code: int = 0, **extra: object) -> str:
    fields: dict[str, object] = {"type": "exit", "id": cid, "code": code, "duration_ms": 1}
    if seq is not None:
        fields["seq"] = seq
    return frame(**fields, **extra)


# --- ids, commands, one at a time --------------------------------------------------------
def test_a_command_gets_a_fresh_id_and_its_frame_is_queued() -> None:
    conv = welcomed()
    first = conv.start_command("info domain")
    assert sent(conv) == [{"type": "command", "id": first, "command": "info domain"}]
    started(conv, first)
    conv.receive_frame(exit_frame(first, 1))
    second = conv.start_command(["print", "users"], stdin=True)
    assert second != first and second.startswith("t-")
    assert sent(conv)[0]["argv"] == ["print", "users"]


def test_default_ids_differ_between_conversations() -> None:
    assert Conversation().new_id() != Conversation().new_id()


def test_a_second_command_while_one_is_in_flight_is_busy() -> None:
    conv = welcomed()
    conv.start_command("version")
    with pytest.raises(CommandRejectedError) as info:
        conv.start_command("version")
    assert info.value.code == "busy"


def test_a_whole_command_gives_started_output_and_exit_then_frees_the_connection() -> None:
    conv = welcomed()
    cid = conv.start_command("version")
    started(conv, cid)
    conv.receive_frame(output(cid, "GAM 7\n", 1))
    conv.receive_frame(exit_frame(cid, 2))
    got = events(conv)
    assert [type(e) for e in got] == [StartedMessage, OutputMessage, ExitMessage]
    assert conv.current_id is None
    conv.start_command("version")  # no longer busy


def test_a_refused_command_is_an_error_event_and_frees_the_connection() -> None:
    conv = welcomed()
    cid = conv.start_command("version")
    conv.receive_frame(frame(type="error", id=cid, code="busy", message="already running"))
    (error,) = events(conv)
    assert isinstance(error, ErrorMessage) and error.code == "busy"
    assert conv.current_id is None


def test_an_error_after_started_keeps_the_command_in_flight() -> None:
    conv = welcomed()
    cid = conv.start_command("batch -", stdin=True)
    started(conv, cid, stdin=True)
    conv.receive_frame(frame(type="error", id=cid, code="bad_request", message="stdin closed"))
    assert conv.current_id == cid
    assert isinstance(events(conv)[-1], ErrorMessage)


# --- welcome ----------------------------------------------------------------------------
def test_anything_before_the_welcome_is_a_protocol_error() -> None:
    conv = Conversation()
    with pytest.raises(ProtocolError, match="before its welcome"):
        conv.receive_frame(frame(type="pong", id="x"))


def test_a_second_welcome_on_one_connection_is_a_protocol_error() -> None:
    conv = welcomed()
    with pytest.raises(ProtocolError, match="second welcome"):
        conv.receive_frame(json.dumps(WELCOME_V11))


@pytest.mark.parametrize(
    "bad",
    ["not json", "{", '{"type":"welcome"}', '{"type":"nope"}', "[1]", b"\xff\xfe"],
)
def test_malformed_frames_are_protocol_errors(bad: str | bytes) -> None:
    conv = Conversation()
    with pytest.raises(ProtocolError, match="invalid message"):
        conv.receive_frame(bad)


def test_v1_and_v11_welcomes_say_whether_commands_can_be_resumed() -> None:
    assert welcomed(WELCOME_V1).supports_resume is False
    assert welcomed(WELCOME_V11).supports_resume is True


# --- ping -------------------------------------------------------------------------------
def test_a_ping_is_answered_by_its_pong_and_holds_other_events_in_order() -> None:
    conv = welcomed()
    cid = conv.start_command("version")
    ping_id = conv.ping()
    assert sent(conv)[-1] == {"type": "ping", "id": ping_id}
    started(conv, cid)
    conv.receive_frame(output(cid, "a", 1))
    assert not conv.ping_answered(ping_id)
    produced = conv.receive_frame(frame(type="pong", id=ping_id))
    assert produced == [PongMessage(id=ping_id)]
    assert conv.ping_answered(ping_id)
    assert not conv.ping_answered(ping_id)  # answered once, then forgotten
    assert [type(e) for e in events(conv)] == [StartedMessage, OutputMessage]


@pytest.mark.parametrize("pong_id", ["never-sent", None])
def test_a_pong_without_a_ping_is_a_protocol_error(pong_id: str | None) -> None:
    conv = welcomed()
    conv.ping()
    with pytest.raises(ProtocolError, match="pong without a ping"):
        conv.receive_frame(json.dumps({"type": "pong", "id": pong_id}))


# --- initial command ----------------------------------------------------------------------
def test_the_initial_command_replay_is_absorbed_not_taken_for_output() -> None:
    conv = welcomed({**WELCOME_V11, "initial_command": True, "busy": True})
    assert conv.initial_pending
    with pytest.raises(CommandRejectedError, match="earlier command"):
        conv.start_command("version")
    conv.receive_frame(frame(type="started", id="initial", argv=["info"], initial=True))
    conv.receive_frame(output("initial", "one\n", 1, initial=True))
    conv.receive_frame(
        frame(type="output", id="initial", stream="stderr", data="warn\n", seq=2, initial=True)
    )
    conv.receive_frame(output("initial", "one\n", 1, initial=True))  # duplicate: dropped
    assert conv.initial_pending
    conv.receive_frame(exit_frame("initial", 3, code=4, initial=True))
    assert events(conv) == []
    assert conv.initial is not None
    assert (conv.initial.argv, conv.initial.stdout, conv.initial.stderr) == (
        ["info"],
        "one\n",
        "warn\n",
    )
    assert conv.initial.exit is not None and conv.initial.exit.code == 4
    assert not conv.initial_pending
    conv.start_command("version")


def test_a_repeated_initial_replay_after_reconnect_changes_nothing() -> None:
    conv = welcomed({**WELCOME_V11, "initial_command": True})
    conv.receive_frame(output("initial", "x", 1, initial=True))
    conv.receive_frame(exit_frame("initial", 2, initial=True))
    conv.connection_lost()
    conv.receive_frame(json.dumps({**WELCOME_V11, "initial_command": True}))
    conv.receive_frame(output("initial", "x", 1, initial=True))
    assert conv.initial is not None and conv.initial.stdout == "x"


# --- abandoned commands -------------------------------------------------------------------
def test_an_abandoned_command_is_swallowed_until_its_exit_settles_it() -> None:
    conv = welcomed()
    cid = conv.start_command("sleep 30")
    started(conv, cid)
    conv.cancel()
    assert sent(conv)[-1] == {"type": "cancel", "id": cid}
    conv.abandon()
    assert conv.settling
    with pytest.raises(CommandRejectedError):
        conv.start_command("next")
    conv.receive_frame(output(cid, "late", 1))
    conv.receive_frame(exit_frame(cid, 2, code=143, cancelled=True))
    conv.receive_frame(frame(type="error", id=cid, code="bad_request", message="no command"))
    assert events(conv) == [StartedMessage(id=cid, argv=["x"])]
    assert not conv.settling
    conv.start_command("next")


def test_late_frames_of_a_finished_command_are_dropped() -> None:
    conv = welcomed()
    cid = conv.start_command("x")
    started(conv, cid)
    conv.receive_frame(exit_frame(cid, 1))
    events(conv)
    conv.receive_frame(exit_frame(cid, 1))
    conv.receive_frame(frame(type="error", id=cid, code="bad_request", message="done"))
    assert events(conv) == []


# --- bad frames ---------------------------------------------------------------------------
def test_an_exit_for_an_unknown_id_is_a_protocol_error() -> None:
    conv = welcomed()
    with pytest.raises(ProtocolError, match="unknown command"):
        conv.receive_frame(exit_frame("ghost", 1))


@pytest.mark.parametrize("kind", ["output", "started", "gap"])
def test_other_frames_for_an_unknown_id_are_protocol_errors(kind: str) -> None:
    conv = welcomed()
    conv.start_command("x")
    bad = {
        "output": output("ghost", "x", 1),
        "started": frame(type="started", id="ghost", argv=[]),
        "gap": frame(type="gap", id="ghost", from_seq=1, to_seq=2),
    }[kind]
    with pytest.raises(ProtocolError, match="unknown command"):
        conv.receive_frame(bad)


@pytest.mark.parametrize("first", ["output", "exit", "gap"])
def test_frames_before_started_are_out_of_order(first: str) -> None:
    conv = welcomed()
    cid = conv.start_command("x")
    bad = {
        "output": output(cid, "x", 1),
        "exit": exit_frame(cid, 1),
        "gap": frame(type="gap", id=cid, from_seq=1, to_seq=2),
    }[first]
    with pytest.raises(ProtocolError, match="before 'started'"):
        conv.receive_frame(bad)


def test_a_second_started_without_an_attach_is_out_of_order() -> None:
    conv = welcomed()
    cid = conv.start_command("x")
    started(conv, cid)
    with pytest.raises(ProtocolError, match="second 'started'"):
        started(conv, cid)


def test_a_gap_that_ends_before_it_begins_is_a_protocol_error() -> None:
    conv = welcomed()
    cid = conv.start_command("x")
    started(conv, cid)
    # The model refuses it now; the conversation would too (defence in depth).
    with pytest.raises(ProtocolError, match=r"ends before it begins|greater than to_seq"):
        conv.receive_frame(frame(type="gap", id=cid, from_seq=5, to_seq=3))


# --- seq bookkeeping ----------------------------------------------------------------------
def _running(conv: Conversation) -> str:
    cid = conv.start_command("x")
    started(conv, cid)
    events(conv)
    return cid


def test_duplicates_are_dropped_and_the_last_seq_is_kept() -> None:
    conv = welcomed()
    cid = _running(conv)
    for seq in (1, 2, 2, 1, 3):
        conv.receive_frame(output(cid, f"d{seq}", seq))
    assert [e.data for e in events(conv) if isinstance(e, OutputMessage)] == ["d1", "d2", "d3"]
    assert conv.last_seq(cid) == 3


def test_a_hole_in_the_seqs_becomes_a_gap_event_with_the_exact_range() -> None:
    conv = welcomed()
    cid = _running(conv)
    conv.receive_frame(output(cid, "a", 1))
    conv.receive_frame(output(cid, "e", 5))
    got = events(conv)
    assert got[1] == GapMessage(id=cid, from_seq=2, to_seq=4)
    assert isinstance(got[2], OutputMessage) and got[2].seq == 5


def test_a_hole_before_the_exit_is_reported_too() -> None:
    conv = welcomed()
    cid = _running(conv)
    conv.receive_frame(exit_frame(cid, 3))
    assert events(conv)[0] == GapMessage(id=cid, from_seq=1, to_seq=2)


def test_an_agent_gap_moves_the_mark_and_overlaps_are_trimmed() -> None:
    conv = welcomed()
    cid = _running(conv)
    conv.receive_frame(output(cid, "a", 1))
    conv.receive_frame(output(cid, "b", 2))
    conv.receive_frame(frame(type="gap", id=cid, from_seq=2, to_seq=6))
    conv.receive_frame(frame(type="gap", id=cid, from_seq=3, to_seq=4))  # already covered
    conv.receive_frame(output(cid, "g", 7))
    got = events(conv)
    assert GapMessage(id=cid, from_seq=3, to_seq=6) in got
    assert len([e for e in got if isinstance(e, GapMessage)]) == 1
    assert conv.last_seq(cid) == 7


def test_a_v1_agent_without_seqs_passes_output_through() -> None:
    conv = welcomed(WELCOME_V1)
    cid = _running(conv)
    conv.receive_frame(output(cid, "a"))
    conv.receive_frame(output(cid, "a"))
    conv.receive_frame(exit_frame(cid))
    assert [type(e) for e in events(conv)] == [OutputMessage, OutputMessage, ExitMessage]


# --- resume ---------------------------------------------------------------------------------
def test_after_a_drop_the_new_welcome_queues_an_attach_after_the_last_seq() -> None:
    conv = welcomed()
    cid = _running(conv)
    conv.receive_frame(output(cid, "a", 1))
    conv.receive_frame(output(cid, "b", 2))
    events(conv)
    assert conv.connection_lost() is True
    assert not conv.welcomed
    conv.receive_frame(
        json.dumps({**WELCOME_V11, "commands": [{"id": cid, "state": "running", "last_seq": 4}]})
    )
    assert sent(conv) == [{"type": "attach", "id": cid, "after_seq": 2}]
    started(conv, cid)  # the attach reply repeats started: not a new event
    conv.receive_frame(output(cid, "b", 2))  # overlap: dropped
    conv.receive_frame(output(cid, "c", 3))
    conv.receive_frame(exit_frame(cid, 4))
    got = events(conv)
    assert [e.data for e in got if isinstance(e, OutputMessage)] == ["c"]
    assert isinstance(got[-1], ExitMessage)


def test_a_command_lost_before_it_started_is_sent_again() -> None:
    conv = welcomed()
    conv.start_command("version")
    first = conv.data_to_send()
    assert conv.connection_lost() is True
    conv.receive_frame(json.dumps(WELCOME_V11))
    assert conv.data_to_send() == first


def test_a_command_the_agent_forgot_is_a_lost_connection() -> None:
    conv = welcomed()
    _running(conv)
    conv.connection_lost()
    with pytest.raises(ConnectionLostError, match="no longer knows"):
        conv.receive_frame(json.dumps(WELCOME_V11))
    assert conv.current_id is None


def test_a_v1_agent_cannot_resume_and_the_command_is_dropped() -> None:
    conv = welcomed(WELCOME_V1)
    _running(conv)
    assert conv.connection_lost() is False
    assert conv.current_id is None


def test_nothing_in_flight_means_nothing_to_resume_and_pending_pings_are_forgotten() -> None:
    conv = welcomed()
    ping_id = conv.ping()
    assert conv.connection_lost() is False
    conv.receive_frame(json.dumps(WELCOME_V11))
    with pytest.raises(ProtocolError, match="pong without a ping"):
        conv.receive_frame(frame(type="pong", id=ping_id))


def test_attach_follows_someone_elses_command_from_after_seq() -> None:
    conv = welcomed()
    conv.attach("theirs", after_seq=3)
    assert sent(conv) == [{"type": "attach", "id": "theirs", "after_seq": 3}]
    conv.receive_frame(frame(type="started", id="theirs", argv=["x"], stdin=True))
    conv.receive_frame(frame(type="gap", id="theirs", from_seq=4, to_seq=5))
    conv.receive_frame(output("theirs", "f", 6))
    conv.receive_frame(exit_frame("theirs", 7))
    assert [type(e) for e in events(conv)] == [
        StartedMessage,
        GapMessage,
        OutputMessage,
        ExitMessage,
    ]


def test_attach_to_an_unknown_id_is_refused_and_frees_the_connection() -> None:
    conv = welcomed()
    conv.attach("nope")
    conv.receive_frame(frame(type="error", id="nope", code="bad_request", message="unknown"))
    assert isinstance(events(conv)[0], ErrorMessage)
    assert conv.current_id is None


# --- stdin, eof, resize ----------------------------------------------------------------------
def test_stdin_writes_and_eof_are_framed_for_the_command_in_flight() -> None:
    conv = welcomed()
    cid = conv.start_command("batch -", stdin=True)
    conv.data_to_send()
    conv.write_stdin("version\n")
    conv.close_stdin()
    assert sent(conv) == []  # held until the command started: an error before is its refusal
    started(conv, cid, stdin=True)
    assert sent(conv) == [
        {"type": "stdin", "id": cid, "data": "version\n"},
        {"type": "stdin", "id": cid, "eof": True},
    ]
    with pytest.raises(CommandRejectedError, match="already closed"):
        conv.write_stdin("more")


def test_stdin_to_a_command_without_stdin_is_refused_locally() -> None:
    conv = welcomed()
    conv.start_command("version")
    with pytest.raises(CommandRejectedError, match="reads stdin") as info:
        conv.write_stdin("x")
    assert info.value.code == "bad_request"
    with pytest.raises(CommandRejectedError, match="terminal"):
        conv.resize(80, 24)


def test_a_tty_command_takes_input_and_resizes() -> None:
    conv = welcomed()
    cid = conv.start_command("oauth create", tty=TtySize(cols=80, rows=24))
    assert sent(conv)[0]["tty"] == {"cols": 80, "rows": 24}
    started(conv, cid, tty={"cols": 80, "rows": 24})
    conv.resize(120, 40)
    conv.write_stdin("y\r")
    assert sent(conv) == [
        {"type": "resize", "id": cid, "cols": 120, "rows": 40},
        {"type": "stdin", "id": cid, "data": "y\r"},
    ]


def test_cancel_without_a_command_lets_the_agent_pick() -> None:
    conv = welcomed()
    conv.cancel()
    assert sent(conv) == [{"type": "cancel"}]
    conv.cancel("theirs")
    assert sent(conv) == [{"type": "cancel", "id": "theirs"}]


def test_input_held_for_a_refused_command_is_never_sent() -> None:
    conv = welcomed()
    cid = conv.start_command("batch -", stdin=True)
    conv.data_to_send()
    conv.write_stdin("version\n")
    conv.receive_frame(frame(type="error", id=cid, code="busy", message="busy"))
    assert sent(conv) == []
    assert isinstance(events(conv)[0], ErrorMessage)


def test_events_received_before_a_drop_are_still_handed_out_after_the_resume() -> None:
    conv = welcomed()
    cid = _running(conv)
    conv.receive_frame(output(cid, "a", 1))  # queued, not read yet (e.g. during a ping)
    assert conv.connection_lost() is True
    conv.receive_frame(
        json.dumps({**WELCOME_V11, "commands": [{"id": cid, "state": "running", "last_seq": 1}]})
    )
    assert sent(conv) == [{"type": "attach", "id": cid, "after_seq": 1}]
    started(conv, cid)
    conv.receive_frame(output(cid, "b", 2))
    assert [e.data for e in events(conv) if isinstance(e, OutputMessage)] == ["a", "b"]


def test_input_that_could_not_be_sent_is_sent_again_after_the_resume() -> None:
    conv = welcomed()
    cid = conv.start_command("batch -", stdin=True)
    started(conv, cid, stdin=True)
    conv.data_to_send()
    conv.write_stdin("echo one\n")
    conv.ping()
    conv.unsent(conv.data_to_send())  # the socket broke while sending
    assert conv.connection_lost() is True
    conv.receive_frame(
        json.dumps({**WELCOME_V11, "commands": [{"id": cid, "state": "running", "last_seq": 0}]})
    )
    assert sent(conv) == [
        {"type": "attach", "id": cid, "after_seq": 0},
        {"type": "stdin", "id": cid, "data": "echo one\n"},
    ]  # the ping died with its connection
