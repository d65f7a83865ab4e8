"""Protocol v1 and v1.1 parsing and validation, without any socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_runtime.protocol import (
    MAX_ARGS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_REVISION,
    PROTOCOL_VERSION,
    AttachMessage,
    CancelMessage,
    CommandMessage,
    CommandSummary,
    ErrorMessage,
    ExitMessage,
    GapMessage,
    OutputMessage,
    PingMessage,
    ProtocolViolation,
    ResizeMessage,
    StartedMessage,
    StdinMessage,
    TtySize,
    WelcomeMessage,
    command_argv,
    encode,
    json_schema,
    parse_agent_message,
    parse_client_message,
)


def test_protocol_version_is_the_subprotocol_name() -> None:
    assert PROTOCOL_VERSION == "gamgui.session.v1"


def test_a_json_command_message_parses_with_its_id() -> None:
    message = parse_client_message('{"type":"command","id":"c1","command":"info domain"}')
    assert message == CommandMessage(id="c1", command="info domain")


def test_an_argv_command_message_parses() -> None:
    message = parse_client_message('{"type":"command","id":"c2","argv":["info","domain"]}')
    assert isinstance(message, CommandMessage)
    assert message.argv == ["info", "domain"]


def test_a_plain_text_frame_is_a_command_string_without_id() -> None:
    message = parse_client_message("info domain")
    assert message == CommandMessage(command="info domain")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"cancel","id":"c1"}', CancelMessage(id="c1")),
        ('{"type":"cancel"}', CancelMessage()),
        ('{"type":"ping","id":"p1"}', PingMessage(id="p1")),
    ],
)
def test_cancel_and_ping_parse(frame: str, expected: object) -> None:
    assert parse_client_message(frame) == expected


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ('{"type": "command"', "malformed JSON"),
        ('{"type":"launch","id":"x"}', "unknown message type 'launch'"),
        ('{"id":"x"}', "unknown message type 'None'"),
        ('{"type":"command","id":"c1"}', "exactly one of 'command'"),
        ('{"type":"command","command":"a","argv":["a"]}', "exactly one of 'command'"),
        ('{"type":"command","command":"a","extra":1}', "extra"),
        ('{"type":"command","argv":"info domain"}', "argv"),
        ('{"type":"command","id":"","command":"x"}', "id"),
        ('{"type":"ping","id":7}', "id"),
    ],
)
def test_bad_frames_are_bad_requests_naming_the_problem(frame: str, fragment: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_client_message(frame)
    assert info.value.code == "bad_request"
    assert fragment in info.value.message


def test_the_id_of_an_invalid_message_is_kept_for_the_reply() -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_client_message('{"type":"nope","id":"m7"}')
    assert info.value.message_id == "m7"


def test_binary_frames_are_refused() -> None:
    with pytest.raises(ProtocolViolation, match="binary frames are not supported"):
        parse_client_message(b'{"type":"ping"}')


def test_oversize_frames_are_refused() -> None:
    with pytest.raises(ProtocolViolation, match=f"larger than {MAX_MESSAGE_BYTES} bytes"):
        parse_client_message("x" * (MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("info domain", ["info", "domain"]),
        ("gam info domain", ["info", "domain"]),
        ("  gam   version ", ["version"]),
        ("print users query 'orgUnitPath=/A B'", ["print", "users", "query", "orgUnitPath=/A B"]),
        ("info domain; touch /tmp/x", ["info", "domain;", "touch", "/tmp/x"]),
        ("info domain && rm -rf /", ["info", "domain", "&&", "rm", "-rf", "/"]),
        ("info `id`", ["info", "`id`"]),
        ("info $(id)", ["info", "$(id)"]),
        ("info domain | cat", ["info", "domain", "|", "cat"]),
        ("info\ndomain", ["info", "domain"]),
    ],
)
def test_command_strings_split_into_literal_arguments(command: str, argv: list[str]) -> None:
    assert command_argv(CommandMessage(command=command)) == argv


def test_argv_is_taken_as_given_with_a_leading_gam_dropped() -> None:
    message = CommandMessage(argv=["gam", "info", "user", "a b;c"])
    assert command_argv(message) == ["info", "user", "a b;c"]


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (CommandMessage(id="e", command=""), "empty command"),
        (CommandMessage(id="e", command="   "), "empty command"),
        (CommandMessage(id="e", command="gam"), "empty command"),
        (CommandMessage(id="e", argv=[]), "empty command"),
        (CommandMessage(id="e", command="info 'domain"), "cannot split command"),
        (CommandMessage(id="e", argv=["info", "a\x00b"]), "NUL"),
    ],
)
def test_unusable_commands_are_bad_requests(message: CommandMessage, fragment: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        command_argv(message)
    assert fragment in info.value.message
    assert info.value.code == "bad_request"
    assert info.value.message_id == "e"


def test_too_many_arguments_are_refused() -> None:
    with pytest.raises(ProtocolViolation, match=f"more than {MAX_ARGS} arguments"):
        command_argv(CommandMessage(command="x " * (MAX_ARGS + 1)))


def test_agent_messages_round_trip_through_encode_and_parse() -> None:
    messages = [
        WelcomeMessage(session_id="s1", agent_version="0.1.0", gam_version="7.49.00"),
        OutputMessage(id="c1", stream="stderr", data="é\ufffd"),
        ExitMessage(id="c1", code=130, duration_ms=5, cancelled=True),
        ErrorMessage(code="busy", message="a command is already running", id="c2"),
    ]
    for message in messages:
        assert parse_agent_message(encode(message)) == message


def test_encode_leaves_out_unknown_optional_fields() -> None:
    frame = json.loads(encode(WelcomeMessage(session_id="s1", agent_version="1")))
    assert "gam_version" not in frame
    assert frame["protocol"] == "gamgui.session.v1"


def test_clients_ignore_fields_a_newer_agent_adds() -> None:
    message = parse_agent_message('{"type":"pong","id":"p1","server_time":1}')
    assert message.type == "pong"


def test_an_invalid_agent_message_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation, match="invalid agent message"):
        parse_agent_message('{"type":"output","id":"c1","stream":"stdin","data":""}')


@given(st.text(max_size=200))
def test_any_text_frame_parses_or_is_a_bad_request(frame: str) -> None:
    codes: list[str] = []
    try:
        message = parse_client_message(frame)
        if isinstance(message, CommandMessage):
            argv = command_argv(message)
            assert argv and all(isinstance(a, str) for a in argv)
    except ProtocolViolation as exc:
        codes.append(exc.code)
    assert codes in ([], ["bad_request"])


# --- v1.1: attach, stdin, resize, tty, seq, gap, welcome.commands ----------------------
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"attach","id":"c1","after_seq":7}', AttachMessage(id="c1", after_seq=7)),
        ('{"type":"attach","id":"c1"}', AttachMessage(id="c1", after_seq=0)),
        ('{"type":"stdin","id":"c1","data":"line\\n"}', StdinMessage(id="c1", data="line\n")),
        ('{"type":"stdin","id":"c1","data":""}', StdinMessage(id="c1", data="")),
        ('{"type":"stdin","id":"c1","eof":true}', StdinMessage(id="c1", eof=True)),
        (
            '{"type":"resize","id":"c1","cols":120,"rows":40}',
            ResizeMessage(id="c1", cols=120, rows=40),
        ),
        (
            '{"type":"command","id":"c1","argv":["batch","-"],"stdin":true}',
            CommandMessage(id="c1", argv=["batch", "-"], stdin=True),
        ),
        (
            '{"type":"command","id":"c1","command":"oauth create","tty":{"cols":80,"rows":24}}',
            CommandMessage(id="c1", command="oauth create", tty=TtySize(cols=80, rows=24)),
        ),
    ],
)
def test_v1_1_client_messages_parse(frame: str, expected: object) -> None:
    assert parse_client_message(frame) == expected


def test_a_tty_command_implies_stdin() -> None:
    assert CommandMessage(command="x", tty=TtySize(cols=1, rows=1)).wants_stdin
    assert CommandMessage(command="x", stdin=True).wants_stdin
    assert not CommandMessage(command="x").wants_stdin


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ('{"type":"attach","id":"c1","after_seq":-1}', "after_seq"),
        ('{"type":"attach","id":"c1","after_seq":"3"}', "after_seq"),
        ('{"type":"attach","after_seq":1}', "id"),
        ('{"type":"attach","id":"","after_seq":1}', "id"),
        ('{"type":"attach","id":"c1","after_seq":1.5}', "after_seq"),
        ('{"type":"stdin","id":"c1"}', "exactly one of 'data'"),
        ('{"type":"stdin","id":"c1","data":"x","eof":true}', "exactly one of 'data'"),
        ('{"type":"stdin","id":"c1","eof":false}', "exactly one of 'data'"),
        ('{"type":"stdin","data":"x"}', "id"),
        ('{"type":"stdin","id":"c1","data":7}', "data"),
        ('{"type":"resize","id":"c1","cols":0,"rows":24}', "cols"),
        ('{"type":"resize","id":"c1","cols":80,"rows":1001}', "rows"),
        ('{"type":"resize","id":"c1","cols":80}', "rows"),
        ('{"type":"command","command":"x","tty":{"cols":80}}', "rows"),
        ('{"type":"command","command":"x","tty":{"cols":-1,"rows":2}}', "cols"),
        ('{"type":"command","command":"x","tty":true}', "tty"),
        ('{"type":"command","command":"x","stdin":"yes"}', "stdin"),
    ],
)
def test_bad_v1_1_client_messages_are_bad_requests(frame: str, fragment: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_client_message(frame)
    assert info.value.code == "bad_request"
    assert fragment in info.value.message


def test_stdin_data_is_bounded_like_every_message() -> None:
    with pytest.raises(ValueError, match="at most"):
        StdinMessage(id="c1", data="x" * (MAX_MESSAGE_BYTES + 1))
    frame = json.dumps({"type": "stdin", "id": "c1", "data": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(ProtocolViolation, match=f"larger than {MAX_MESSAGE_BYTES} bytes"):
        parse_client_message(frame)


def test_v1_1_agent_messages_round_trip() -> None:
    messages = [
        WelcomeMessage(
            session_id="s1",
            revision=PROTOCOL_REVISION,
            agent_version="0.1.0",
            gam_mode="warm",
            busy=True,
            commands=[
                CommandSummary(id="c1", state="finished", last_seq=9),
                CommandSummary(id="c2", state="running", last_seq=3, tty=True),
            ],
        ),
        StartedMessage(
            id="c2", argv=["oauth", "create"], stdin=True, tty=TtySize(cols=80, rows=24)
        ),
        OutputMessage(id="c2", stream="tty", data="\x1b[1mOK\x1b[0m\r\n", seq=3),
        GapMessage(id="c2", from_seq=1, to_seq=2),
        ExitMessage(id="c2", code=0, duration_ms=12, seq=4),
    ]
    for message in messages:
        assert parse_agent_message(encode(message)) == message


def test_a_v1_agent_welcome_parses_with_v1_1_defaults() -> None:
    welcome = parse_agent_message('{"type":"welcome","session_id":"s","agent_version":"0.1"}')
    assert isinstance(welcome, WelcomeMessage)
    assert (welcome.revision, welcome.gam_mode, welcome.commands) == (None, None, [])


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"output","id":"c1","stream":"stdout","data":"x","seq":0}',
        '{"type":"output","id":"c1","stream":"stdout","data":"x","seq":-3}',
        '{"type":"exit","id":"c1","code":0,"duration_ms":1,"seq":0}',
        '{"type":"gap","id":"c1","from_seq":0,"to_seq":2}',
        '{"type":"gap","id":"c1","from_seq":5,"to_seq":4}',
        '{"type":"gap","id":"c1","from_seq":1}',
        '{"type":"welcome","session_id":"s","agent_version":"1","gam_mode":"lukewarm"}',
        '{"type":"welcome","session_id":"s","agent_version":"1",'
        '"commands":[{"id":"c1","state":"paused"}]}',
        '{"type":"welcome","session_id":"s","agent_version":"1",'
        '"commands":[{"id":"c1","state":"running","last_seq":-1}]}',
    ],
)
def test_bad_v1_1_agent_messages_are_violations(frame: str) -> None:
    with pytest.raises(ProtocolViolation, match="invalid agent message"):
        parse_agent_message(frame)


def test_a_gap_of_one_message_is_a_range_of_one() -> None:
    assert GapMessage(id="c1", from_seq=4, to_seq=4).to_seq == 4


def test_the_published_json_schema_is_generated_from_the_models() -> None:
    published = Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json"
    generated = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    assert published.read_text(encoding="utf-8") == generated, (
        "regenerate it: python -m session_runtime.protocol --schema > docs/protocol.schema.json"
    )
