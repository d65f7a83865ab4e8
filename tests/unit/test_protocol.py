"""Protocol v1 parsing and validation, without any socket."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_runtime.protocol import (
    MAX_ARGS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    CancelMessage,
    CommandMessage,
    ErrorMessage,
    ExitMessage,
    OutputMessage,
    PingMessage,
    ProtocolViolation,
    WelcomeMessage,
    command_argv,
    encode,
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
