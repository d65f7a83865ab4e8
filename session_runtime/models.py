"""Plain data the runtime hands across module boundaries (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "BackendSession",
    "CommandResult",
    "CreateRequest",
    "ProgressCallback",
    "ProgressEvent",
    "ReapReason",
    "ReapedSession",
    "SessionInfo",
    "SessionStatus",
    "report_progress",
]


def _now() -> datetime:
    return datetime.now(UTC)


class SessionStatus(StrEnum):
    """Where a session is in its life. ``ready`` means the agent answers."""

    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    TERMINATING = "terminating"
    FINISHED = "finished"


class ProgressEvent(BaseModel):
    """One step of a long wait (pod scheduled, image pulled, agent answering ...)."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    phase: str
    message: str
    at: datetime = Field(default_factory=_now)


ProgressCallback = Callable[[ProgressEvent], None]


def report_progress(
    progress: ProgressCallback | None, session_id: str, phase: str, message: str
) -> None:
    """Send one progress event, when anyone listens (every backend reports this way)."""
    if progress is not None:
        progress(ProgressEvent(session_id=session_id, phase=phase, message=message))


class CreateRequest(BaseModel):
    """What a backend needs to start one session. The manager fills every field."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    token: SecretStr
    command: str | None = None
    credentials_secret: str
    max_sessions: int


class BackendSession(BaseModel):
    """A session as a backend sees it. ``token`` is secret: never logged or printed."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    token: SecretStr
    status: SessionStatus
    created_at: datetime
    command: str | None = None
    credentials_secret: str | None = None
    #: ``host:port`` of the agent itself (pod IP, or 127.0.0.N locally), when known.
    agent_address: str | None = None
    #: Why the session is failed or finished, when known.
    reason: str | None = None
    #: True when this ``create`` started the session (False: it existed and is returned).
    created: bool = False


class SessionInfo(BaseModel):
    """What :meth:`SessionManager.create_session` returns to the server."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    websocket_url: str
    websocket_path: str
    token: SecretStr
    status: SessionStatus
    created_at: datetime

    def public_dict(self, *, include_token: bool = False) -> dict[str, object]:
        """Return a JSON-ready dict; the token only when asked for explicitly."""
        data: dict[str, object] = self.model_dump(mode="json", exclude={"token"})
        if include_token:
            data["token"] = self.token.get_secret_value()
        return data


class CommandResult(BaseModel):
    """The outcome of one command run to completion in a session."""

    model_config = ConfigDict(frozen=True)

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int


class ReapReason(StrEnum):
    """Why the reaper removes a session: one word for metrics, events and audit lines."""

    FINISHED = "finished"
    FAILED = "failed"
    IDLE = "idle"
    LIFETIME_EXCEEDED = "lifetime_exceeded"
    ORPHANED = "orphaned"
    #: A controller's pod whose agent restarted after its one-time token hand-off.
    RESTARTED = "restarted"


class ReapedSession(BaseModel):
    """One session the reaper removed (or would remove, with ``--dry-run``), and why.

    ``reason_code`` is the reason as one word; ``reason`` says it in words, with
    the numbers behind it; ``idle_since`` is the agent's last activity when the
    session was idle.
    """

    model_config = ConfigDict(frozen=True)

    session_id: str
    reason: str
    reason_code: ReapReason
    removed: bool
    idle_since: datetime | None = None
