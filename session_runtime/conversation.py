"""The client's side of a conversation with one agent, without any I/O.

Like ``websockets``' ``protocol.py``, this object is fed the frames a shell
received and hands back what happened (the agent's messages, checked and
filtered) and the frames to send. It owns every rule of talking to an agent,
so :class:`~session_runtime.client.SessionConnection` (sync) and
:class:`~session_runtime.aclient.AsyncSessionConnection` (asyncio) are only
sockets, clocks and loops around it:

- command ids (unique per conversation, so two clients never share one) and
  one command at a time per connection;
- the initial command (``SESSION_COMMAND``) replayed on connect is absorbed
  into :attr:`Conversation.initial`, never mistaken for the caller's output;
- a command given up on (timeout, a ``with`` block left early) is *abandoned*:
  its remaining frames are swallowed until its ``exit`` settles it;
- while a ping waits for its pong, every other event stays queued in order
  (a ping never eats a command's output);
- ``seq`` bookkeeping (v1.1): duplicates (``seq`` <= the last seen) are
  dropped, a hole becomes a ``gap`` event, a ``gap`` from the agent moves the
  mark past what was lost;
- resume: after :meth:`Conversation.connection_lost` and a new welcome, the
  frame that picks the command up again (``attach`` after the last seq seen,
  or the command itself when the agent never started it);
- errors for what a correct agent never sends: a second welcome, anything
  before the welcome, an exit (or output) for an unknown command, frames out of
  order, a pong without a ping, malformed JSON.

No socket, no clock, no thread: the unit tests drive it by frames alone.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from session_runtime.errors import (
    CommandRejectedError,
    CommandTimeoutError,
    ConnectionLostError,
    ProtocolError,
)
from session_runtime.protocol import (
    AgentMessageModel,
    AttachMessage,
    CancelMessage,
    CommandMessage,
    ErrorMessage,
    ExitMessage,
    GapMessage,
    OutputMessage,
    PingMessage,
    PongMessage,
    ProtocolViolation,
    ResizeMessage,
    StartedMessage,
    StdinMessage,
    Stream,
    TtySize,
    WelcomeMessage,
    encode,
    parse_agent_message,
)

__all__ = [
    "CommandRecord",
    "Conversation",
    "Event",
    "InitialCommand",
    "OutputChunk",
]

#: What :meth:`Conversation.next_event` hands out: the agent's messages, checked.
#: A hole in the seqs arrives as a :class:`GapMessage` the agent never sent.
Event = StartedMessage | OutputMessage | GapMessage | ExitMessage | ErrorMessage

#: How many finished command ids are remembered, to swallow their late frames.
_FINISHED_MEMORY = 8


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a command's output as the agent sent it (``seq`` from v1.1 agents)."""

    stream: Stream
    data: str
    seq: int | None = None


@dataclass
class InitialCommand:
    """The session's initial command as replayed by the agent (``exit`` None while running)."""

    argv: list[str]
    stdout: str = ""
    stderr: str = ""
    exit: ExitMessage | None = None
    last_seq: int = 0


class CommandRecord:
    """What a command handle knows of its command, applied event by event (no I/O).

    Both shells' handles keep one, so ``started``, ``exit``, ``gaps`` and ``seq``
    mean the same in each.

    Args:
        command_id: the command's id.
    """

    def __init__(self, command_id: str) -> None:
        self.id = command_id
        self.started: StartedMessage | None = None
        self.exit: ExitMessage | None = None
        #: Ranges ``(from_seq, to_seq)`` the agent's replay buffer dropped.
        self.gaps: list[tuple[int, int]] = []
        #: The last seq seen (0 before any, and with v1 agents).
        self.seq = 0
        self._refusal: ErrorMessage | None = None

    def apply(self, event: Event) -> Event | None:
        """Record ``event``; return it when it concerns this command.

        Raises:
            CommandRejectedError: an error before ``started``: the command was refused.
        """
        if isinstance(event, ErrorMessage):
            if event.id not in (self.id, None):
                return None
            if self.started is None:
                raise CommandRejectedError(event.message, code=event.code)
            self._refusal = event  # a refused stdin/resize: raised by the next request
            return event
        if event.id != self.id:
            return None
        if isinstance(event, StartedMessage):
            self.started = event
        elif isinstance(event, GapMessage):
            self.gaps.append((event.from_seq, event.to_seq))
            self.seq = event.to_seq
        else:
            self.seq = event.seq or self.seq
            if isinstance(event, ExitMessage):
                self.exit = event
        return event

    def raise_refusal(self) -> None:
        """Raise the agent's refusal of an earlier stdin/resize request, once.

        Raises:
            CommandRejectedError: the refusal, with its code.
        """
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            raise CommandRejectedError(refusal.message, code=refusal.code)

    def check_exit(self) -> None:
        """Raise when the exit says the agent's own command timeout ended the command.

        Raises:
            CommandTimeoutError: ``exit.timed_out``.
        """
        if self.exit is not None and self.exit.timed_out:
            raise CommandTimeoutError(
                "Command exceeded the session's command timeout",
                cause=f"exit code {self.exit.code} after {self.exit.duration_ms} ms",
            )


@dataclass
class _Flight:
    """The command this conversation started or attached to, until its exit."""

    id: str
    #: The command as sent (None when attached to somebody else's command).
    message: CommandMessage | None
    started: StartedMessage | None = None
    #: An ``attach`` was sent: its reply begins with a (repeated) ``started``.
    awaiting_started: bool = True
    last_seq: int = 0
    stdin_closed: bool = False
    exit: ExitMessage | None = field(default=None, repr=False)
    #: stdin/resize frames written before ``started``: sent when it arrives, so an
    #: error before ``started`` can only be the refusal of the command itself.
    held: list[str] = field(default_factory=list)
    #: Input queued when the connection dropped: sent again after the resuming attach.
    resend: list[str] = field(default_factory=list)

    @property
    def reads_stdin(self) -> bool:
        if self.started is not None:
            return self.started.stdin or self.started.tty is not None
        return self.message is not None and self.message.wants_stdin

    @property
    def has_tty(self) -> bool:
        if self.started is not None:
            return self.started.tty is not None
        return self.message is not None and self.message.tty is not None


class Conversation:
    """The state of talking to one agent, across reconnects.

    Feed every received frame to :meth:`receive_frame`, send what
    :meth:`data_to_send` returns, and read :meth:`next_event`. Methods that
    request something (:meth:`start_command`, :meth:`cancel`, :meth:`ping` ...)
    only queue frames.

    Args:
        id_prefix: the start of every id this conversation makes; random by
            default so ids of different clients never collide in one session.
    """

    def __init__(self, id_prefix: str | None = None) -> None:
        self.id_prefix = id_prefix if id_prefix is not None else f"c{secrets.token_hex(3)}-"
        #: The latest welcome (None until the first one arrives).
        self.welcome: WelcomeMessage | None = None
        #: The session's initial command, once its replay began.
        self.initial: InitialCommand | None = None
        self._counter = itertools.count(1)
        self._welcomed = False
        self._resuming = False
        self._current: _Flight | None = None
        self._abandoned: set[str] = set()
        self._finished: deque[str] = deque(maxlen=_FINISHED_MEMORY)
        self._pings: dict[str, bool] = {}
        self._outgoing: list[str] = []
        self._events: deque[Event] = deque()

    # --- what the shell asks ------------------------------------------------------
    @property
    def welcomed(self) -> bool:
        """Whether the current connection's welcome has arrived."""
        return self._welcomed

    @property
    def supports_resume(self) -> bool:
        """Whether the agent keeps commands across connections (v1.1: it sends ``revision``)."""
        return self.welcome is not None and self.welcome.revision is not None

    @property
    def initial_pending(self) -> bool:
        """The session's initial command still runs: a command sent now would be busy."""
        if self.welcome is None or not self.welcome.initial_command:
            return False
        return self.initial is None or self.initial.exit is None

    @property
    def settling(self) -> bool:
        """An abandoned command has not sent its exit yet: the agent is still busy with it."""
        return bool(self._abandoned)

    @property
    def current_id(self) -> str | None:
        """The id of the command in flight on this conversation, if any."""
        return self._current.id if self._current is not None else None

    @property
    def current_started(self) -> StartedMessage | None:
        """The ``started`` of the command in flight, once it arrived."""
        return self._current.started if self._current is not None else None

    def last_seq(self, command_id: str) -> int:
        """The highest seq seen of the command in flight (0 before any, or for v1 agents).

        Args:
            command_id: the command's id.
        """
        flight = self._current
        return flight.last_seq if flight is not None and flight.id == command_id else 0

    def data_to_send(self) -> list[str]:
        """Return (and forget) the frames queued for the agent, in order."""
        frames, self._outgoing = self._outgoing, []
        return frames

    def unsent(self, frames: list[str]) -> None:
        """Give back frames a shell could not send (the socket broke): they go first again.

        After a resume, the command's input among them is sent once more.

        Args:
            frames: the frames from :meth:`data_to_send` not written, in order.
        """
        self._outgoing[:0] = frames

    def next_event(self) -> Event | None:
        """Return the oldest event not handed out yet, or None."""
        return self._events.popleft() if self._events else None

    def ping_answered(self, ping_id: str) -> bool:
        """True once the pong of ``ping_id`` arrived (the ping is then forgotten).

        Args:
            ping_id: what :meth:`ping` returned.
        """
        if self._pings.get(ping_id):
            del self._pings[ping_id]
            return True
        return False

    # --- requests -------------------------------------------------------------------
    def new_id(self, kind: str = "") -> str:
        """Return a fresh id (``kind`` marks pings, ``p``)."""
        return f"{self.id_prefix}{kind}{next(self._counter)}"

    def start_command(
        self,
        command: str | Sequence[str],
        *,
        stdin: bool = False,
        tty: TtySize | None = None,
        command_id: str | None = None,
    ) -> str:
        """Queue a command and return its id.

        Args:
            command: a command line (split by the agent) or an argv list.
            stdin: the command reads what :meth:`write_stdin` sends.
            tty: run it under a pseudo-terminal of this size (stdin implied).
            command_id: an id from :meth:`new_id` reserved earlier (default: a fresh one).

        Raises:
            CommandRejectedError: code ``busy`` when a command (ours, the initial
                one, or an abandoned one) is still running; the shell waits for the
                latter two first.
        """
        self._check_free()
        command_id = command_id or self.new_id()
        if isinstance(command, str):
            message = CommandMessage(id=command_id, command=command, stdin=stdin, tty=tty)
        else:
            message = CommandMessage(id=command_id, argv=list(command), stdin=stdin, tty=tty)
        self._current = _Flight(id=command_id, message=message)
        self._outgoing.append(_encode_lean(message))
        return command_id

    def attach(self, command_id: str, after_seq: int = 0) -> None:
        """Queue an ``attach``: follow a command of this session from after ``after_seq``.

        Args:
            command_id: the command, e.g. from ``welcome.commands``.
            after_seq: the last seq already seen (0: from the start).

        Raises:
            CommandRejectedError: ``busy``, a command is in flight here.
        """
        self._check_free()
        self._current = _Flight(id=command_id, message=None, last_seq=after_seq)
        self._outgoing.append(encode(AttachMessage(id=command_id, after_seq=after_seq)))

    def cancel(self, command_id: str | None = None) -> None:
        """Queue a cancel of ``command_id`` (default: the command in flight, or the running one).

        Args:
            command_id: which command; None lets the agent pick the running one.
        """
        target = command_id or self.current_id
        self._outgoing.append(encode(CancelMessage(id=target)))

    def abandon(self) -> None:
        """Give up on the command in flight: its remaining frames are swallowed until its exit."""
        flight, self._current = self._current, None
        if flight is not None:
            self._abandoned.add(flight.id)

    def drop(self) -> None:
        """Forget the command in flight without awaiting its exit (it failed on this side)."""
        self._current = None

    def write_stdin(self, data: str) -> None:
        """Queue ``data`` for the stdin of the command in flight.

        Raises:
            CommandRejectedError: ``bad_request`` when no command reads stdin, or after EOF.
        """
        flight = self._stdin_flight()
        self._request(flight, _encode_lean(StdinMessage(id=flight.id, data=data)))

    def close_stdin(self) -> None:
        """Queue the EOF of the stdin of the command in flight.

        Raises:
            CommandRejectedError: ``bad_request`` when no command reads stdin, or after EOF.
        """
        flight = self._stdin_flight()
        flight.stdin_closed = True
        self._request(flight, encode(StdinMessage(id=flight.id, eof=True)))

    def resize(self, cols: int, rows: int) -> None:
        """Queue a resize of the terminal of the command in flight.

        Raises:
            CommandRejectedError: ``bad_request`` when the command has no tty.
        """
        flight = self._current
        if flight is None or not flight.has_tty:
            raise CommandRejectedError("no running command has a terminal", code="bad_request")
        self._request(flight, encode(ResizeMessage(id=flight.id, cols=cols, rows=rows)))

    def ping(self) -> str:
        """Queue a ping and return its id (see :meth:`ping_answered`)."""
        ping_id = self.new_id("p")
        self._pings[ping_id] = False
        self._outgoing.append(encode(PingMessage(id=ping_id)))
        return ping_id

    # --- connection changes -----------------------------------------------------------
    def connection_lost(self) -> bool:
        """The socket is gone; return True when the command in flight can be resumed.

        Resuming needs a v1.1 agent (commands outlive their connection there). The
        shell opens a new connection and feeds it here: after its welcome the
        conversation queues the frame that picks the command up again. When False,
        the command in flight is dropped and the shell raises ConnectionLostError.
        """
        self._welcomed = False
        self._pings.clear()
        self._abandoned.clear()  # they are cancelled; a new connection never hears of them
        # Input for the command that never left is sent again after the attach.
        pending, self._outgoing = self._outgoing, []
        if self._current is not None:
            self._current.resend = [f for f in pending if _is_input_for(f, self._current.id)]
        # Queued events stay: they were received (and counted in last_seq) before the drop.
        if self._current is None:
            return False
        if not self.supports_resume:
            self._current = None
            return False
        self._resuming = True
        return True

    # --- frames in ----------------------------------------------------------------
    def receive_frame(self, frame: str | bytes) -> list[AgentMessageModel]:
        """Take one received text frame; return the messages it produced (maybe none).

        Command events are also queued for :meth:`next_event`.

        Raises:
            ProtocolError: the frame is malformed or breaks a rule (see the module doc).
            ConnectionLostError: after a reconnect, the command in flight is unknown
                to the agent.
        """
        try:
            message = parse_agent_message(frame)
        except ProtocolViolation as exc:
            raise ProtocolError("The agent sent an invalid message", cause=exc.message) from exc
        return self.receive_message(message)

    def receive_message(self, message: AgentMessageModel) -> list[AgentMessageModel]:
        """Take one parsed agent message (see :meth:`receive_frame`)."""
        if isinstance(message, WelcomeMessage):
            return self._on_welcome(message)
        if not self._welcomed:
            raise ProtocolError(
                "The agent spoke before its welcome", cause=f"got {message.type!r} first"
            )
        if isinstance(message, PongMessage):
            if message.id not in self._pings:
                raise ProtocolError("The agent sent a pong without a ping", cause=repr(message.id))
            self._pings[message.id] = True
            return [message]
        if isinstance(message, ErrorMessage):
            return self._on_error(message)
        if message.initial:
            self._on_initial(message)
            return []
        return self._on_command_message(message)

    # --- rules ----------------------------------------------------------------------
    def _check_free(self) -> None:
        if self._current is not None:
            raise CommandRejectedError(
                "a command is already running on this connection",
                code="busy",
                hint="wait for its exit, or cancel it",
            )
        if self.initial_pending or self.settling:
            raise CommandRejectedError(
                "the session is still running an earlier command",
                code="busy",
                hint="wait for the initial (or abandoned) command's exit first",
            )

    def _request(self, flight: _Flight, frame: str) -> None:
        if flight.started is None:
            flight.held.append(frame)
        else:
            self._outgoing.append(frame)

    def _stdin_flight(self) -> _Flight:
        flight = self._current
        if flight is None or not flight.reads_stdin:
            raise CommandRejectedError(
                "no running command reads stdin",
                code="bad_request",
                hint="start the command with stdin=True (or a tty)",
            )
        if flight.stdin_closed:
            raise CommandRejectedError("stdin is already closed (EOF sent)", code="bad_request")
        return flight

    def _on_welcome(self, welcome: WelcomeMessage) -> list[AgentMessageModel]:
        if self._welcomed:
            raise ProtocolError("The agent sent a second welcome on one connection")
        self._welcomed = True
        self.welcome = welcome
        if self._resuming:
            self._resuming = False
            self._resume(welcome)
        return [welcome]

    def _resume(self, welcome: WelcomeMessage) -> None:
        flight = self._current
        assert flight is not None  # noqa: S101 - set whenever _resuming is
        known = {summary.id for summary in welcome.commands}
        if flight.id in known:
            flight.awaiting_started = True
            self._outgoing.append(encode(AttachMessage(id=flight.id, after_seq=flight.last_seq)))
            self._outgoing.extend(flight.resend)
            flight.resend = []
        elif flight.started is None and flight.message is not None:
            # The agent never started it (the command frame was lost with the socket).
            self._outgoing.append(_encode_lean(flight.message))
        else:
            self._current = None
            raise ConnectionLostError(
                cause=f"after reconnecting, the agent no longer knows command {flight.id!r}",
                hint="the session may have restarted, or a newer command replaced it",
            )

    def _on_error(self, message: ErrorMessage) -> list[AgentMessageModel]:
        if message.id is not None and (
            message.id in self._abandoned or message.id in self._finished
        ):
            return []  # e.g. "no command is running" for a cancel that crossed the exit
        flight = self._current
        if flight is not None and message.id in (flight.id, None) and flight.started is None:
            self._current = None  # the command (or attach) was refused: nothing is in flight
            self._finished.append(flight.id)
        self._events.append(message)
        return [message]

    def _on_initial(self, message: AgentMessageModel) -> None:
        initial = self.initial
        if isinstance(message, StartedMessage):
            if initial is None:
                self.initial = InitialCommand(argv=message.argv)
            return
        if initial is None:
            initial = self.initial = InitialCommand(argv=[])
        if initial.exit is not None:
            return  # replayed again after a reconnect
        seq = getattr(message, "seq", None)
        if seq is not None:
            if seq <= initial.last_seq:
                return
            initial.last_seq = seq
        if isinstance(message, GapMessage):
            initial.last_seq = max(initial.last_seq, message.to_seq)
        elif isinstance(message, OutputMessage):
            if message.stream == "stderr":
                initial.stderr += message.data
            else:
                initial.stdout += message.data
        elif isinstance(message, ExitMessage):
            initial.exit = message

    def _on_command_message(
        self, message: StartedMessage | OutputMessage | GapMessage | ExitMessage
    ) -> list[AgentMessageModel]:
        if message.id in self._abandoned:
            if isinstance(message, ExitMessage):
                self._abandoned.discard(message.id)
                self._finished.append(message.id)
            return []
        flight = self._current
        if flight is None or flight.id != message.id:
            if message.id in self._finished:
                return []  # a late duplicate of a command already ended
            raise ProtocolError(
                f"The agent sent {message.type!r} for an unknown command",
                cause=f"id {message.id!r} was neither started nor attached here",
            )
        if isinstance(message, StartedMessage):
            if not flight.awaiting_started:
                raise ProtocolError("The agent sent a second 'started'", cause=f"id {message.id!r}")
            flight.awaiting_started = False
            first = flight.started is None
            flight.started = message
            if not first:
                return []  # the repeated started of a resume: nothing new for the caller
            self._outgoing.extend(flight.held)
            flight.held.clear()
            self._events.append(message)
            return [message]
        if flight.started is None:
            raise ProtocolError(
                f"The agent sent {message.type!r} before 'started'", cause=f"id {message.id!r}"
            )
        produced = self._sequenced(flight, message)
        if isinstance(message, ExitMessage) and produced:
            flight.exit = message
            self._current = None
            self._finished.append(flight.id)
        self._events.extend(produced)
        return list(produced)

    def _sequenced(
        self, flight: _Flight, message: OutputMessage | GapMessage | ExitMessage
    ) -> list[Event]:
        """Apply the seq rules: drop duplicates, report holes, move the mark."""
        if isinstance(message, GapMessage):
            if message.to_seq < message.from_seq:
                raise ProtocolError(
                    "The agent sent a gap that ends before it begins",
                    cause=f"{message.from_seq}..{message.to_seq}",
                )
            if message.to_seq <= flight.last_seq:
                return []
            gap = GapMessage(id=flight.id, from_seq=flight.last_seq + 1, to_seq=message.to_seq)
            flight.last_seq = message.to_seq
            return [gap]
        seq = message.seq
        if seq is None:  # a v1 agent: no seqs, nothing to check
            return [message]
        if seq <= flight.last_seq:
            return []  # already seen (a replay overlapping what arrived before a drop)
        produced: list[Event] = []
        if seq > flight.last_seq + 1:
            produced.append(GapMessage(id=flight.id, from_seq=flight.last_seq + 1, to_seq=seq - 1))
        flight.last_seq = seq
        produced.append(message)
        return produced


def _is_input_for(frame: str, command_id: str) -> bool:
    """Whether ``frame`` (one this module built) is stdin or a resize for ``command_id``."""
    try:
        data = json.loads(frame)
    except ValueError:  # pragma: no cover - every queued frame is JSON
        return False
    return data.get("type") in ("stdin", "resize") and data.get("id") == command_id


def _encode_lean(message: CommandMessage | StdinMessage) -> str:
    """Encode a message without its unset flags: a v1 agent refuses fields it does not know."""
    unset = {name for name in ("stdin", "eof") if getattr(message, name, None) is False}
    return message.model_dump_json(exclude_none=True, exclude=unset)
