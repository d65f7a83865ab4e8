"""The session WebSocket protocol, v1.1 (``gamgui.session.v1``), without any I/O.

Every frame is a JSON text object with a ``type``. The agent and the client
both parse and build messages here, so the rules live in one place and are
tested without sockets (the sans-I/O shape of the ``websockets`` library).

Client -> agent: ``command`` (``command`` string or ``argv`` list; optional
``stdin: true`` or ``tty: {cols, rows}``), ``cancel``, ``attach`` (``id``,
``after_seq``), ``stdin`` (``id``, ``data`` or ``eof: true``), ``resize``
(``id``, ``cols``, ``rows``), ``ping``. A text frame that does not start with
``{`` is a command string, so ``echo "info domain" | websocat ...`` works.

Agent -> client: ``welcome``, ``started``, ``output``, ``gap``, ``exit``,
``error``, ``pong``. Messages about the session's initial command carry
``initial: true``.

v1.1 only adds optional fields and message types, so a v1 peer keeps working:
``output`` and ``exit`` carry ``seq`` (1, 2, 3 ... per command, in the order
the agent produced them); a command outlives its connection and any client may
``attach`` to it and be replayed every retained message with ``seq >
after_seq`` (a ``gap`` first names what the bounded buffer dropped).
``python -m session_runtime.protocol --schema`` prints the JSON Schema of every
message (``docs/protocol.schema.json``).
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from session_runtime import naming

__all__ = [
    "AGENT_MESSAGE_TYPES",
    "CLIENT_MESSAGE_TYPES",
    "ERROR_CODES",
    "INITIAL_COMMAND_ID",
    "MAX_ARGS",
    "MAX_MESSAGE_BYTES",
    "MAX_TTY_SIZE",
    "PROTOCOL_REVISION",
    "PROTOCOL_VERSION",
    "AgentMessage",
    "AgentMessageModel",
    "AttachMessage",
    "CancelMessage",
    "ClientMessage",
    "ClientMessageModel",
    "CommandMessage",
    "CommandState",
    "CommandSummary",
    "ErrorCode",
    "ErrorMessage",
    "ExitMessage",
    "GamMode",
    "GapMessage",
    "OutputMessage",
    "PingMessage",
    "PongMessage",
    "ProtocolViolation",
    "ResizeMessage",
    "StartedMessage",
    "StdinMessage",
    "Stream",
    "TtySize",
    "WelcomeMessage",
    "command_argv",
    "encode",
    "json_schema",
    "parse_agent_message",
    "parse_client_message",
]

PROTOCOL_VERSION = naming.SUBPROTOCOL
#: The revision within v1 this module speaks (``welcome.revision``); v1.1 adds only
#: optional fields and message types.
PROTOCOL_REVISION = "1.1"
#: Largest client frame the agent accepts; GAM command lines are far shorter.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most arguments one command may have after splitting.
MAX_ARGS = 1024
#: The ``id`` of the command given in SESSION_COMMAND, run once at start.
INITIAL_COMMAND_ID = "initial"
_MAX_ID_LENGTH = 128
#: Largest terminal a ``tty`` command or a ``resize`` may ask for, per side.
MAX_TTY_SIZE = 1000

ErrorCode = Literal["bad_request", "busy", "not_allowed", "unauthorized", "internal"]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)
#: ``tty`` is the merged output of a command run under a pseudo-terminal.
Stream = Literal["stdout", "stderr", "tty"]
#: How the agent starts GAM: ``warm`` forks from a process that imported GAM once.
GamMode = Literal["warm", "cold"]
CommandState = Literal["running", "finished"]
MessageId = Annotated[str, Field(min_length=1, max_length=_MAX_ID_LENGTH)]
#: Per-command sequence numbers start at 1; 0 means "nothing seen yet". The v1.1
#: client fields are strict: ``"3"`` is not a seq and ``"yes"`` is not ``true``.
Seq = Annotated[int, Field(ge=0, strict=True)]
TtySide = Annotated[int, Field(ge=1, le=MAX_TTY_SIZE, strict=True)]
Flag = Annotated[bool, Field(strict=True)]


class ProtocolViolation(ValueError):
    """A frame breaks the protocol. ``code`` is the error code to answer with.

    Args:
        message: what is wrong, safe to send back to the peer.
        code: one of :data:`ERROR_CODES`.
        message_id: the offending message's ``id`` when it could be read.
    """

    def __init__(
        self, message: str, *, code: ErrorCode = "bad_request", message_id: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code
        self.message_id = message_id


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _AgentMessage(BaseModel):
    # Clients ignore fields a newer agent adds within v1.
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- client -> agent ------------------------------------------------------------
class TtySize(_Message):
    """A terminal's size in character cells."""

    cols: TtySide
    rows: TtySide


class CommandMessage(_Message):
    """Run one GAM command: a ``command`` string (split with shlex) or an ``argv`` list.

    ``id`` is chosen by the client and echoed on every reply; the agent assigns
    one when a plain text frame carried the command. With ``stdin: true`` the
    command reads what ``stdin`` messages send (else ``/dev/null``); with
    ``tty`` it runs under a pseudo-terminal of that size (stdin implied, output
    arrives as ``stream: "tty"``).
    """

    type: Literal["command"] = "command"
    id: MessageId | None = None
    command: str | None = None
    argv: list[str] | None = Field(default=None, max_length=MAX_ARGS)
    stdin: Flag = False
    tty: TtySize | None = None

    @model_validator(mode="after")
    def _exactly_one_form(self) -> CommandMessage:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of 'command' (a string) or 'argv' (a list)")
        return self

    @property
    def wants_stdin(self) -> bool:
        """Whether the command reads client input (``stdin: true`` or a tty)."""
        return self.stdin or self.tty is not None


class CancelMessage(_Message):
    """Stop a running command (SIGTERM, then SIGKILL after a grace period).

    Any authenticated client of the session may cancel; without ``id`` the
    running command is meant.
    """

    type: Literal["cancel"] = "cancel"
    id: MessageId | None = None


class AttachMessage(_Message):
    """Follow a command: replay its retained messages with ``seq > after_seq``, then live.

    The reply is the command's ``started``, a ``gap`` when messages after
    ``after_seq`` were dropped, the retained ``output`` messages in order, and
    ``exit`` when the command has ended (at once, or when it does).
    """

    type: Literal["attach"] = "attach"
    id: MessageId
    after_seq: Seq = 0


class StdinMessage(_Message):
    """Write ``data`` to a command's stdin, or close it with ``eof: true``.

    Only for commands started with ``stdin: true`` or ``tty``.
    """

    type: Literal["stdin"] = "stdin"
    id: MessageId
    data: str | None = Field(default=None, max_length=MAX_MESSAGE_BYTES)
    eof: Flag = False

    @model_validator(mode="after")
    def _data_or_eof(self) -> StdinMessage:
        if (self.data is None) == (not self.eof):
            raise ValueError("give exactly one of 'data' (a string) or 'eof': true")
        return self


class ResizeMessage(_Message):
    """Resize the pseudo-terminal of a ``tty`` command (the command gets SIGWINCH)."""

    type: Literal["resize"] = "resize"
    id: MessageId
    cols: TtySide
    rows: TtySide


class PingMessage(_Message):
    """Ask for a ``pong``; a liveness check that also counts as activity."""

    type: Literal["ping"] = "ping"
    id: MessageId | None = None


ClientMessageModel = (
    CommandMessage | CancelMessage | AttachMessage | StdinMessage | ResizeMessage | PingMessage
)
ClientMessage = Annotated[ClientMessageModel, Field(discriminator="type")]
CLIENT_MESSAGE_TYPES: tuple[str, ...] = ("command", "cancel", "attach", "stdin", "resize", "ping")


# --- agent -> client ------------------------------------------------------------
class CommandSummary(_AgentMessage):
    """One of the session's commands as listed in ``welcome``: what to ``attach`` to."""

    id: str
    state: CommandState
    #: The highest ``seq`` produced so far (the ``exit``'s once finished).
    last_seq: Seq = 0
    initial: bool = False
    tty: bool = False


class WelcomeMessage(_AgentMessage):
    """First frame on every connection: who answers, and in which versions."""

    type: Literal["welcome"] = "welcome"
    session_id: str
    protocol: str = PROTOCOL_VERSION
    #: The revision within v1 the agent speaks (``"1.1"``); absent from v1 agents.
    revision: str | None = None
    agent_version: str
    gam_version: str | None = None
    #: How GAM is started (v1.1): ``warm`` (forked from a process that imported it) or ``cold``.
    gam_mode: GamMode | None = None
    busy: bool = False
    #: Whether the session was started with an initial command (replayed next).
    initial_command: bool = False
    #: The running command and the last finished one, oldest first (v1.1).
    commands: list[CommandSummary] = Field(default_factory=list)


class StartedMessage(_AgentMessage):
    """The command's process is running; ``argv`` is what GAM received (without GAM_BIN).

    Also the first reply to ``attach``.
    """

    type: Literal["started"] = "started"
    id: str
    argv: list[str]
    initial: bool = False
    #: v1.1: the command reads client input (``stdin`` messages).
    stdin: bool = False
    #: v1.1: the terminal size of a ``tty`` command.
    tty: TtySize | None = None


class OutputMessage(_AgentMessage):
    """A chunk of output as produced (not necessarily whole lines), UTF-8 with replacement."""

    type: Literal["output"] = "output"
    id: str
    stream: Stream
    data: str
    initial: bool = False
    #: v1.1: this message's place in its command's sequence (1, 2, 3 ...).
    seq: int | None = Field(default=None, ge=1)


class GapMessage(_AgentMessage):
    """Messages ``from_seq`` to ``to_seq`` (inclusive) of a command were dropped (buffer full)."""

    type: Literal["gap"] = "gap"
    id: str
    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)
    initial: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> GapMessage:
        if self.from_seq > self.to_seq:
            raise ValueError("from_seq must not be greater than to_seq")
        return self


class ExitMessage(_AgentMessage):
    """The command ended. ``code`` is 128+N when it was ended by signal N."""

    type: Literal["exit"] = "exit"
    id: str
    code: int
    duration_ms: int = Field(ge=0)
    cancelled: bool = False
    timed_out: bool = False
    initial: bool = False
    #: v1.1: the last ``seq`` of the command (one more than its last output's).
    seq: int | None = Field(default=None, ge=1)


class ErrorMessage(_AgentMessage):
    """A request was refused or failed; ``id`` names the message it answers, if known."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    id: str | None = None


class PongMessage(_AgentMessage):
    """Answer to ``ping``, echoing its ``id``."""

    type: Literal["pong"] = "pong"
    id: str | None = None


AgentMessageModel = (
    WelcomeMessage
    | StartedMessage
    | OutputMessage
    | GapMessage
    | ExitMessage
    | ErrorMessage
    | PongMessage
)
AgentMessage = Annotated[AgentMessageModel, Field(discriminator="type")]
AGENT_MESSAGE_TYPES: tuple[str, ...] = (
    "welcome",
    "started",
    "output",
    "gap",
    "exit",
    "error",
    "pong",
)

_CLIENT_ADAPTER: TypeAdapter[ClientMessageModel] = TypeAdapter(ClientMessage)
_AGENT_ADAPTER: TypeAdapter[AgentMessageModel] = TypeAdapter(AgentMessage)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        loc = item["loc"]
        # The first element names the union member (the message type), not a field;
        # a field may share a type's name ("stdin").
        if loc and loc[0] in CLIENT_MESSAGE_TYPES + AGENT_MESSAGE_TYPES:
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(parts)


def parse_client_message(frame: str | bytes) -> ClientMessageModel:
    """Parse one frame sent by a client.

    Args:
        frame: the frame's payload; text frames are ``str``, binary frames ``bytes``.

    Returns:
        The validated message. Text not starting with ``{`` becomes a
        :class:`CommandMessage` with that text as ``command`` and no ``id``.

    Raises:
        ProtocolViolation: binary frame, oversize frame, malformed JSON,
            unknown ``type`` or invalid fields (code ``bad_request``).
    """
    if isinstance(frame, bytes | bytearray):
        raise ProtocolViolation("binary frames are not supported; send JSON text")
    if len(frame.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ProtocolViolation(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    if not frame.lstrip().startswith("{"):
        return CommandMessage(command=frame)
    try:
        data = json.loads(frame)
        # Lone surrogates (``"\ud800"``) parse but can be neither sent back nor executed.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise ProtocolViolation(f"malformed JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise ProtocolViolation("malformed JSON: nested too deeply") from None
    except UnicodeEncodeError:
        raise ProtocolViolation("invalid Unicode: lone surrogate escapes") from None
    except ValueError:  # e.g. an integer beyond Python's digit limit
        raise ProtocolViolation("malformed JSON: a value out of range") from None
    if not isinstance(data, dict):  # pragma: no cover - '{' guarantees an object or an error
        raise ProtocolViolation("a message must be a JSON object")
    raw_id = data.get("id")
    message_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= _MAX_ID_LENGTH else None
    kind = data.get("type")
    if kind not in CLIENT_MESSAGE_TYPES:
        allowed = ", ".join(CLIENT_MESSAGE_TYPES)
        raise ProtocolViolation(
            f"unknown message type {str(kind)[:40]!r}; expected one of: {allowed}",
            message_id=message_id,
        )
    try:
        return _CLIENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ProtocolViolation(
            f"invalid {kind} message: {_describe(exc)}", message_id=message_id
        ) from None


def command_argv(message: CommandMessage) -> list[str]:
    """Return GAM's arguments for a command: shlex-split, a leading ``gam`` dropped.

    Nothing here is ever given to a shell, so ``;``, ``&&``, ``|``, backticks and
    ``$()`` reach GAM as literal arguments.

    Args:
        message: a validated command message.

    Raises:
        ProtocolViolation: empty command, unbalanced quotes, NUL bytes, too many
            arguments (code ``bad_request``).
    """
    if message.argv is not None:
        args = list(message.argv)
    else:
        assert message.command is not None  # noqa: S101 - guaranteed by the model validator
        try:
            args = shlex.split(message.command)
        except ValueError as exc:
            raise ProtocolViolation(f"cannot split command: {exc}", message_id=message.id) from None
    if args and args[0] == "gam":
        args = args[1:]
    if not args:
        raise ProtocolViolation("empty command", message_id=message.id)
    if len(args) > MAX_ARGS:
        raise ProtocolViolation(f"more than {MAX_ARGS} arguments", message_id=message.id)
    if any("\x00" in arg for arg in args):
        raise ProtocolViolation("arguments may not contain NUL bytes", message_id=message.id)
    return args


def parse_agent_message(frame: str | bytes) -> AgentMessageModel:
    """Parse one frame sent by an agent (used by the client).

    Args:
        frame: the frame's payload.

    Raises:
        ProtocolViolation: the frame is not a valid agent message.
    """
    if isinstance(frame, bytes | bytearray):
        try:
            frame = bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("agent sent a binary frame that is not UTF-8") from None
    try:
        return _AGENT_ADAPTER.validate_json(frame)
    except ValidationError as exc:
        raise ProtocolViolation(f"invalid agent message: {_describe(exc)}") from None


def encode(message: BaseModel) -> str:
    """Return the JSON text frame for a message (``None`` fields are left out).

    Args:
        message: any message model from this module.
    """
    return message.model_dump_json(exclude_none=True)


def json_schema() -> dict[str, object]:
    """Return the JSON Schema (draft 2020-12) of every client and agent message.

    Generated from the models above, never written by hand:
    ``docs/protocol.schema.json`` is this function's output, and a test keeps
    it current.
    """
    client = _CLIENT_ADAPTER.json_schema(ref_template="#/$defs/{model}")
    agent = _AGENT_ADAPTER.json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, object] = {}
    for part in (client, agent):
        defs.update(part.pop("$defs", {}))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gamgui.io/schemas/session-protocol-v1.1.json",
        "title": f"{PROTOCOL_VERSION} (revision {PROTOCOL_REVISION})",
        "description": "Frames of the gamgui session WebSocket protocol; each is one JSON text "
        "frame. ClientMessage: client -> agent; AgentMessage: agent -> client.",
        "$defs": {
            **defs,
            "ClientMessage": client,
            "AgentMessage": agent,
        },
        "oneOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/AgentMessage"}],
    }


def _main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415 - only for the command line
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m session_runtime.protocol",
        description="Print the session protocol's JSON Schema.",
    )
    parser.add_argument("--schema", action="store_true", help="print the JSON Schema")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_help(sys.stderr)
        return 2
    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in tests
    raise SystemExit(_main())
