"""The session WebSocket protocol, v1 (``gamgui.session.v1``), without any I/O.

Every frame is a JSON text object with a ``type``. The agent and the client
both parse and build messages here, so the rules live in one place and are
tested without sockets (the sans-I/O shape of the ``websockets`` library).

Client -> agent: ``command`` (``command`` string or ``argv`` list), ``cancel``,
``ping``. A text frame that does not start with ``{`` is a command string, so
``echo "info domain" | websocat ...`` works.

Agent -> client: ``welcome``, ``started``, ``output``, ``exit``, ``error``,
``pong``. Messages about the session's initial command carry ``initial: true``.
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from session_runtime import naming

__all__ = [
    "AGENT_MESSAGE_TYPES",
    "CLIENT_MESSAGE_TYPES",
    "ERROR_CODES",
    "INITIAL_COMMAND_ID",
    "MAX_ARGS",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "AgentMessage",
    "CancelMessage",
    "ClientMessage",
    "CommandMessage",
    "ErrorCode",
    "ErrorMessage",
    "ExitMessage",
    "OutputMessage",
    "PingMessage",
    "PongMessage",
    "ProtocolViolation",
    "StartedMessage",
    "Stream",
    "WelcomeMessage",
    "command_argv",
    "encode",
    "parse_agent_message",
    "parse_client_message",
]

PROTOCOL_VERSION = naming.SUBPROTOCOL
#: Largest client frame the agent accepts; GAM command lines are far shorter.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most arguments one command may have after splitting.
MAX_ARGS = 1024
#: The ``id`` of the command given in SESSION_COMMAND, run once at start.
INITIAL_COMMAND_ID = "initial"
_MAX_ID_LENGTH = 128

ErrorCode = Literal["bad_request", "busy", "not_allowed", "unauthorized", "internal"]
ERROR_CODES: tuple[str, ...] = ("bad_request", "busy", "not_allowed", "unauthorized", "internal")
Stream = Literal["stdout", "stderr"]
MessageId = Annotated[str, Field(min_length=1, max_length=_MAX_ID_LENGTH)]


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
class CommandMessage(_Message):
    """Run one GAM command: a ``command`` string (split with shlex) or an ``argv`` list.

    ``id`` is chosen by the client and echoed on every reply; the agent assigns
    one when a plain text frame carried the command.
    """

    type: Literal["command"] = "command"
    id: MessageId | None = None
    command: str | None = None
    argv: list[str] | None = Field(default=None, max_length=MAX_ARGS)

    @model_validator(mode="after")
    def _exactly_one_form(self) -> CommandMessage:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of 'command' (a string) or 'argv' (a list)")
        return self


class CancelMessage(_Message):
    """Stop the running command (SIGTERM, then SIGKILL after a grace period)."""

    type: Literal["cancel"] = "cancel"
    id: MessageId | None = None


class PingMessage(_Message):
    """Ask for a ``pong``; a liveness check that also counts as activity."""

    type: Literal["ping"] = "ping"
    id: MessageId | None = None


ClientMessage = Annotated[CommandMessage | CancelMessage | PingMessage, Field(discriminator="type")]
CLIENT_MESSAGE_TYPES: tuple[str, ...] = ("command", "cancel", "ping")


# --- agent -> client ------------------------------------------------------------
class WelcomeMessage(_AgentMessage):
    """First frame on every connection: who answers, and in which versions."""

    type: Literal["welcome"] = "welcome"
    session_id: str
    protocol: str = PROTOCOL_VERSION
    agent_version: str
    gam_version: str | None = None
    busy: bool = False
    #: Whether the session was started with an initial command (replayed next).
    initial_command: bool = False


class StartedMessage(_AgentMessage):
    """The command's process is running; ``argv`` is what GAM received (without GAM_BIN)."""

    type: Literal["started"] = "started"
    id: str
    argv: list[str]
    initial: bool = False


class OutputMessage(_AgentMessage):
    """A chunk of output as produced (not necessarily whole lines), UTF-8 with replacement."""

    type: Literal["output"] = "output"
    id: str
    stream: Stream
    data: str
    initial: bool = False


class ExitMessage(_AgentMessage):
    """The command ended. ``code`` is 128+N when it was ended by signal N."""

    type: Literal["exit"] = "exit"
    id: str
    code: int
    duration_ms: int = Field(ge=0)
    cancelled: bool = False
    timed_out: bool = False
    initial: bool = False


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


AgentMessage = Annotated[
    WelcomeMessage | StartedMessage | OutputMessage | ExitMessage | ErrorMessage | PongMessage,
    Field(discriminator="type"),
]
AGENT_MESSAGE_TYPES: tuple[str, ...] = ("welcome", "started", "output", "exit", "error", "pong")

_CLIENT_ADAPTER: TypeAdapter[CommandMessage | CancelMessage | PingMessage] = TypeAdapter(
    ClientMessage
)
_AGENT_ADAPTER: TypeAdapter[
    WelcomeMessage | StartedMessage | OutputMessage | ExitMessage | ErrorMessage | PongMessage
] = TypeAdapter(AgentMessage)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"] if p not in CLIENT_MESSAGE_TYPES)
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(parts)


def parse_client_message(frame: str | bytes) -> CommandMessage | CancelMessage | PingMessage:
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


def parse_agent_message(
    frame: str | bytes,
) -> WelcomeMessage | StartedMessage | OutputMessage | ExitMessage | ErrorMessage | PongMessage:
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
