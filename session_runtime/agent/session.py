"""The state one agent shares between its connections: activity, the running job, replay.

Exactly one command runs at a time. A job belongs to the connection that sent
it (its output goes there only) or, for the initial command, to everyone:
its messages are kept (bounded) and replayed to each client that connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from session_runtime.agent.config import AgentConfig
from session_runtime.agent.launcher import GamLauncher
from session_runtime.agent.log import log_event
from session_runtime.agent.runner import CommandRun, RunOutcome, SinkGone
from session_runtime.protocol import (
    INITIAL_COMMAND_ID,
    ExitMessage,
    OutputMessage,
    StartedMessage,
    Stream,
    encode,
)

__all__ = ["Job", "ReplayBuffer", "Send", "Session", "SessionBusy", "gam_environment"]

#: Sends one text frame; raises :class:`SinkGone` when the peer is gone.
Send = Callable[[str], Awaitable[None]]

#: Variables the agent itself reads that GAM must never see.
_PRIVATE_ENV = frozenset({"SESSION_TOKEN", "SESSION_TOKEN_FILE"})


class SessionBusy(Exception):
    """A command is already running in this session."""


def gam_environment(config: AgentConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment GAM runs with: GAMCFGDIR and friends, no session token.

    GAM writes its config, cache and downloads; all of it goes under GAMCFGDIR
    (never ``~/.gam`` or ``~/Downloads``: the pod's root filesystem is read-only).
    Update checks are off by default in GAM 7 and need no setting.

    Args:
        config: the agent configuration.
        base: the environment to start from; ``os.environ`` when omitted.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _PRIVATE_ENV}
    cfg = config.gam_config_dir
    env["GAMCFGDIR"] = str(cfg)
    env.setdefault("GAMCACHEDIR", str(cfg / "gamcache"))
    env.setdefault("GAMDRIVEDIR", str(cfg / "downloads"))
    # google-api-core's FutureWarning about Python versions would prefix every stderr.
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


class ReplayBuffer:
    """The initial command's frames, the oldest output dropped beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._seq = itertools.count()
        self.started: str | None = None
        self.exit: str | None = None
        self._output: deque[tuple[int, str, int]] = deque()

    def add_output(self, frame: str, size: int) -> None:
        """Keep one output frame of ``size`` payload bytes, trimming the oldest."""
        self._output.append((next(self._seq), frame, size))
        self._size += size
        while self._size > self._limit and len(self._output) > 1:
            _, _, dropped = self._output.popleft()
            self._size -= dropped

    def output_after(self, seq: int) -> list[tuple[int, str]]:
        """Return the kept output frames newer than ``seq``."""
        return [(s, f) for s, f, _ in self._output if s > seq]


@dataclass
class Job:
    """The running command."""

    id: str
    argv: list[str]
    run: CommandRun
    owner: object | None
    initial: bool = False
    task: asyncio.Task[RunOutcome] | None = field(default=None, repr=False)


class Session:
    """Activity, the one running job and the initial-command replay of this agent.

    Args:
        config: the agent configuration.
        credentials_found: names of the credential files copied into GAMCFGDIR.
    """

    def __init__(self, config: AgentConfig, credentials_found: list[str]) -> None:
        self.config = config
        self.credentials_found = credentials_found
        self.launcher = GamLauncher(config)
        self.started_at = time.time()
        self.last_activity = self.started_at
        self._last_activity_mono = time.monotonic()
        self.connections: set[object] = set()
        self.job: Job | None = None
        self.replay: ReplayBuffer | None = None
        self._subscribers: dict[object, Send] = {}
        self._exec_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._env = gam_environment(config)
        self.idle = asyncio.Event()

    @property
    def gam_version(self) -> str | None:
        """The installed GAM's version (package metadata), when GAM_BIN is that GAM."""
        return self.launcher.gam_version

    # --- activity -------------------------------------------------------------
    def touch(self) -> None:
        """Record client activity (messages, connections; never health probes)."""
        self.last_activity = time.time()
        self._last_activity_mono = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last activity; 0 while a command runs."""
        if self.job is not None:
            return 0.0
        return time.monotonic() - self._last_activity_mono

    @property
    def busy(self) -> bool:
        """Whether a command is running (or reserved to run)."""
        return self.job is not None

    def next_id(self) -> str:
        """Return an id for a command that came without one."""
        return f"auto-{next(self._ids)}"

    # --- jobs -----------------------------------------------------------------
    def start(self, job_id: str, argv: list[str], owner: object, send: Send) -> Job:
        """Start a client's command, streaming to ``send`` only.

        Args:
            job_id: the command's id, echoed on every reply.
            argv: GAM's arguments (GAM_BIN is prepended here).
            owner: the connection that sent it; cancel and disconnect refer to it.
            send: sends one frame to that connection.

        Raises:
            SessionBusy: another command is running.
        """
        if self.job is not None:
            raise SessionBusy(f"command {self.job.id!r} is still running")

        async def sink(stream: Stream, data: str) -> None:
            await send(encode(OutputMessage(id=job_id, stream=stream, data=data)))

        job = Job(job_id, argv, self._command(argv, sink), owner)
        self.job = job
        job.task = asyncio.get_running_loop().create_task(self._drive(job, send))
        return job

    def start_initial(self, command_argv: list[str]) -> Job:
        """Reserve the session for the initial command and run it for everyone."""
        self.replay = replay = ReplayBuffer(self.config.replay_bytes)

        async def sink(stream: Stream, data: str) -> None:
            frame = encode(
                OutputMessage(id=INITIAL_COMMAND_ID, stream=stream, data=data, initial=True)
            )
            replay.add_output(frame, len(data))
            await self._broadcast(frame)

        def remember(kind: str, frame: str) -> None:
            if kind == "started":
                replay.started = frame
            else:
                replay.exit = frame

        job = Job(INITIAL_COMMAND_ID, command_argv, self._command(command_argv, sink), None, True)
        self.job = job
        job.task = asyncio.get_running_loop().create_task(
            self._drive(job, self._broadcast, remember)
        )
        return job

    def _command(
        self, argv: list[str], sink: Callable[[Stream, str], Awaitable[None]]
    ) -> CommandRun:
        return CommandRun(
            [self.config.gam_bin, *argv],
            sink,
            env=self._env,
            cwd=self.config.gam_config_dir,
            kill_grace_s=self.config.kill_grace_s,
            timeout_s=self.config.command_timeout_s,
            launcher=self.launcher,
        )

    async def _drive(
        self, job: Job, send: Send, remember: Callable[[str, str], None] | None = None
    ) -> RunOutcome:
        try:
            async with self._exec_lock:
                started = encode(StartedMessage(id=job.id, argv=job.argv, initial=job.initial))
                if remember is not None:
                    remember("started", started)
                try:
                    await send(started)
                except SinkGone:
                    job.run.stop("detached")
                log_event("command_started", id=job.id, args=len(job.argv), initial=job.initial)
                outcome = await job.run.run()
            log_event(
                "command_finished",
                id=job.id,
                code=outcome.code,
                duration_ms=outcome.duration_ms,
                cancelled=outcome.cancelled,
                timed_out=outcome.timed_out,
                detached=outcome.detached,
            )
            exit_message = ExitMessage(
                id=job.id,
                code=outcome.code,
                duration_ms=outcome.duration_ms,
                cancelled=outcome.cancelled,
                timed_out=outcome.timed_out,
                initial=job.initial,
            )
            if remember is not None:
                remember("exit", encode(exit_message))
            if not outcome.detached:
                with contextlib.suppress(SinkGone):
                    await send(encode(exit_message))
            return outcome
        finally:
            self.job = None
            self.touch()

    # --- initial command broadcast ---------------------------------------------
    def subscribe(self, connection: object, send: Send) -> None:
        """Receive the initial command's live frames from now on."""
        self._subscribers[connection] = send

    def unsubscribe(self, connection: object) -> None:
        """Stop sending initial-command frames to ``connection``."""
        self._subscribers.pop(connection, None)

    async def _broadcast(self, frame: str) -> None:
        for connection, send in list(self._subscribers.items()):
            try:
                await send(frame)
            except SinkGone:
                self.unsubscribe(connection)

    async def replay_to(self, connection: object, send: Send) -> None:
        """Send the initial command's kept frames, then subscribe to the rest.

        Output produced while replaying is picked up by re-reading the buffer
        until caught up; subscribing happens with no await after the last check,
        so no frame is lost or sent twice.
        """
        replay = self.replay
        if replay is None:
            return
        if replay.started is not None:
            await send(replay.started)
        seq = -1
        while True:
            pending = replay.output_after(seq)
            if not pending:
                break
            for seq, frame in pending:  # noqa: B007 - seq is the resume point
                await send(frame)
        if replay.exit is not None:
            await send(replay.exit)
        elif self.job is not None and self.job.initial:
            self.subscribe(connection, send)
