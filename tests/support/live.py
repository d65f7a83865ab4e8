"""A raw protocol peer for live-session tests: frames as dicts, nothing hidden.

``Peer`` speaks to an agent (directly or through nginx) with websocket-client
and no conversation logic, so a test sees exactly what the agent sends:
``seq`` values, ``gap`` frames, replays. :func:`resume_scenario` is the
drop-and-resume run shared by the direct and the through-the-proxy tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import websocket

from session_runtime import naming

__all__ = ["Peer", "Transcript", "resume_scenario"]

Frame = dict[str, object]


class Peer:
    """One raw WebSocket connection to a session.

    Args:
        url: the session's WebSocket URL.
        token: the session token (sent as ``Authorization: Bearer``).
        headers: more handshake headers.
        timeout: seconds any single receive may take.
    """

    def __init__(
        self, url: str, token: str, *, headers: list[str] | None = None, timeout: float = 20.0
    ) -> None:
        self.ws = websocket.create_connection(
            url,
            header=[f"Authorization: Bearer {token}", *(headers or [])],
            subprotocols=[naming.SUBPROTOCOL],
            timeout=timeout,
        )
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome

    def send(self, **message: object) -> None:
        """Send one JSON message."""
        self.ws.send(json.dumps(message))

    def recv(self) -> Frame:
        """Receive one agent message."""
        data = self.ws.recv()
        frame: Frame = json.loads(data)
        return frame

    def until(self, predicate: Callable[[Frame], bool]) -> list[Frame]:
        """Receive until a message matches ``predicate``; return all of them, it last."""
        seen = []
        while True:
            message = self.recv()
            seen.append(message)
            if predicate(message):
                return seen

    def read_until_closed(self) -> list[Frame]:
        """Receive until the other side closes the connection; return what came first."""
        seen = []
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except (OSError, websocket.WebSocketConnectionClosedException):
                return seen
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return seen
            seen.append(json.loads(data))

    def drop(self) -> None:
        """Vanish without a close frame, as a lost network would."""
        self.ws.sock.close()

    def close(self) -> None:
        """Close politely (a dropped connection is left as it is)."""
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=2)


@dataclass
class Transcript:
    """What a client assembled of one command across connections."""

    outputs: list[Frame] = field(default_factory=list)
    gaps: list[Frame] = field(default_factory=list)
    exit: Frame | None = None
    starts: int = 0

    @property
    def last_seq(self) -> int:
        """The highest seq received so far (0 before any)."""
        seqs = [int(f["seq"]) for f in self.outputs]  # type: ignore[call-overload]
        if self.gaps:
            seqs.append(int(self.gaps[-1]["to_seq"]))  # type: ignore[call-overload]
        return max(seqs, default=0)

    @property
    def text(self) -> str:
        """The output's data, concatenated in arrival order."""
        return "".join(str(f["data"]) for f in self.outputs)

    def take(self, message: Frame, command_id: str) -> None:
        """Record one message about ``command_id`` (others are ignored)."""
        if message.get("id") != command_id:
            return
        kind = message["type"]
        if kind == "started":
            self.starts += 1
        elif kind == "output":
            self.outputs.append(message)
        elif kind == "gap":
            self.gaps.append(message)
        elif kind == "exit":
            self.exit = message


def resume_scenario(
    connect: Callable[[], Peer], argv: list[str], *, drops: int, command_id: str = "live-1"
) -> Transcript:
    """Start ``argv``, drop the connection ``drops`` times after output, resume each time.

    Every reconnection attaches with the last seq seen; the last one reads to
    the exit. Returns what the client saw.
    """
    transcript = Transcript()
    peer = connect()
    peer.send(type="command", id=command_id, argv=argv)
    for _ in range(drops):
        for message in peer.until(lambda m: m.get("type") in ("output", "exit")):
            transcript.take(message, command_id)
        peer.drop()
        if transcript.exit is not None:
            break
        peer = connect()
        peer.send(type="attach", id=command_id, after_seq=transcript.last_seq)
    try:
        while transcript.exit is None:
            transcript.take(peer.recv(), command_id)
    finally:
        peer.close()
    return transcript
