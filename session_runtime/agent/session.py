"""The state one agent shares between its connections: activity, the running job, its commands.

Exactly one command runs at a time. A command outlives the connection that
started it: its messages are numbered and kept in its replay buffer
(:mod:`session_runtime.agent.live`), and any authenticated connection may
attach to it, cancel it, or type into it. The session retains the running
command, the last finished one, and the initial command (replayed to every
new connection, as in v1); older ones are forgotten when a command ends.

A command nobody is attached to is cancelled after SESSION_DETACH_TIMEOUT
(0 = never; the command timeout still applies). The initial command belongs
to the session, not to a client, and is never cancelled for being detached.
While a command runs the session is not idle.

Requests that cannot be honoured raise
:class:`~session_runtime.protocol.ProtocolViolation` with the code to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from dataclasses import dataclass, field

from session_runtime.agent.config import AgentConfig
from session_runtime.agent.inbox import InputQueue
from session_runtime.agent.launcher import GamLauncher
from session_runtime.agent.live import LiveCommand, Send, frame
from session_runtime.agent.log import log_event
from session_runtime.agent.observe import AgentObserver, ClientInfo, NullObserver
from session_runtime.agent.runner import CommandRun, RunOutcome, SinkGone, StdinClosed
from session_runtime.protocol import (
    INITIAL_COMMAND_ID,
    CommandSummary,
    ErrorMessage,
    ProtocolViolation,
    TtySize,
)

__all__ = ["Job", "Send", "Session", "SessionBusy", "gam_environment"]

#: Variables the agent itself reads that GAM must never see.
_PRIVATE_ENV = frozenset({"SESSION_TOKEN", "SESSION_TOKEN_FILE"})
#: Exit code reported when a run ended without an outcome (the agent was torn down).
_ABORTED_CODE = 128 + 9


class SessionBusy(ProtocolViolation):
    """A command is already running in this session (answered with ``busy``)."""

    def __init__(self, message: str, message_id: str | None = None) -> None:
        super().__init__(message, code="busy", message_id=message_id)


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


@dataclass(eq=False)
class Job:
    """The running command: what clients see of it, and its process."""

    live: LiveCommand
    run: CommandRun
    task: asyncio.Task[RunOutcome] | None = field(default=None, repr=False)
    #: EOF was asked for (later input is refused at once, in arrival order).
    eof: bool = False
    #: Input waiting to be written, in arrival order.
    input: InputQueue | None = field(default=None, repr=False)
    detach_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        """The command's id."""
        return self.live.id

    @property
    def initial(self) -> bool:
        """Whether it is the session's initial command."""
        return self.live.info.initial


class Session:
    """Activity, the one running job and the retained commands of this agent.

    Args:
        config: the agent configuration.
        credentials_found: names of the credential files copied into GAMCFGDIR.
        observer: receives every event for audit lines and metrics.
    """

    def __init__(
        self,
        config: AgentConfig,
        credentials_found: list[str],
        observer: AgentObserver | None = None,
    ) -> None:
        self.config = config
        self.credentials_found = credentials_found
        self.observer: AgentObserver = observer if observer is not None else NullObserver()
        self.launcher = GamLauncher(config)
        self.started_at = time.time()
        self._last_activity = self.started_at
        self._last_activity_mono = time.monotonic()
        self.connections: set[object] = set()
        self.job: Job | None = None
        #: The most recently finished command (attachable until the next one ends).
        self.last: LiveCommand | None = None
        #: The initial command, replayed to every connection for the session's life.
        self.initial: LiveCommand | None = None
        self._ids = itertools.count(1)
        self._env = gam_environment(config)

    @property
    def gam_version(self) -> str | None:
        """The installed GAM's version (package metadata), when GAM_BIN is that GAM."""
        return self.launcher.gam_version

    # --- activity -------------------------------------------------------------
    def touch(self) -> None:
        """Record client activity (messages, connections; never health probes)."""
        self._last_activity = time.time()
        self._last_activity_mono = time.monotonic()

    @property
    def last_activity(self) -> float:
        """Unix time of the last activity; now while a command runs (it is activity)."""
        return time.time() if self.job is not None else self._last_activity

    def idle_for(self) -> float:
        """Seconds since the last activity; 0 while a command runs."""
        if self.job is not None:
            return 0.0
        return time.monotonic() - self._last_activity_mono

    @property
    def busy(self) -> bool:
        """Whether a command is running."""
        return self.job is not None

    def next_id(self) -> str:
        """Return an id for a command that came without one."""
        return f"auto-{next(self._ids)}"

    # --- commands -------------------------------------------------------------
    def commands(self) -> list[CommandSummary]:
        """The last finished and the running command, oldest first (``welcome.commands``)."""
        listed = [self.last, self.job.live if self.job else None]
        return [live.summary() for live in listed if live is not None]

    def find(self, command_id: str) -> LiveCommand | None:
        """Return the newest retained command with this id (ids may repeat across clients)."""
        for live in (self.job.live if self.job else None, self.last, self.initial):
            if live is not None and live.id == command_id:
                return live
        return None

    def start(
        self,
        command_id: str,
        argv: list[str],
        connection: object,
        send: Send,
        *,
        client: ClientInfo | None = None,
        stdin: bool = False,
        tty: TtySize | None = None,
    ) -> Job:
        """Start a client's command; the connection that sent it is attached to it.

        Args:
            command_id: the command's id, echoed on every reply.
            argv: GAM's arguments (GAM_BIN is prepended here).
            connection: the connection that sent it.
            send: sends one frame to that connection.
            client: who that connection is (audit).
            stdin: give the command a pipe for ``stdin`` messages.
            tty: run it under a pseudo-terminal of this size.

        Raises:
            SessionBusy: another command is running.
        """
        if self.job is not None:
            raise SessionBusy(f"a command is already running: {self.job.id!r}", command_id)
        job = self._launch(command_id, argv, started_by=client, stdin=stdin, tty=tty)
        job.live.attach(connection, send)
        return job

    def start_initial(self, command_argv: list[str]) -> Job:
        """Run the initial command for everyone: every connection is replayed it."""
        job = self._launch(INITIAL_COMMAND_ID, command_argv, initial=True)
        self.initial = job.live
        return job

    def _launch(
        self,
        command_id: str,
        argv: list[str],
        *,
        initial: bool = False,
        started_by: ClientInfo | None = None,
        stdin: bool = False,
        tty: TtySize | None = None,
    ) -> Job:
        live = LiveCommand(
            command_id,
            argv,
            replay_bytes=self.config.replay_bytes,
            initial=initial,
            stdin=stdin,
            tty=tty,
            started_by=started_by,
            on_readers_changed=self._readers_changed,
        )
        run = CommandRun(
            [self.config.gam_bin, *argv],
            live.publish,
            env=self._env,
            cwd=self.config.gam_config_dir,
            kill_grace_s=self.config.kill_grace_s,
            timeout_s=self.config.command_timeout_s,
            stdin=stdin,
            tty=tty,
            launcher=self.launcher,
        )
        job = Job(live, run)
        if live.info.stdin:
            job.input = InputQueue(run, functools.partial(_spawned, job))
        self.job = job
        job.task = asyncio.get_running_loop().create_task(self._drive(job))
        return job

    async def _drive(self, job: Job) -> RunOutcome:
        live = job.live
        try:
            log_event(
                "command_started",
                id=job.id,
                args=len(live.info.argv),
                initial=job.initial,
                stdin=live.info.stdin,
                tty=live.info.tty,
            )
            self.observer.command_started(live.info)
            outcome = await job.run.run()
            if outcome.timed_out:  # the runner stopped it on SESSION_COMMAND_TIMEOUT
                self.observer.cancel_requested(None, job.id, "timed_out")
            live.finish(outcome)
            log_event(
                "command_finished",
                id=job.id,
                code=outcome.code,
                duration_ms=outcome.duration_ms,
                cancelled=outcome.cancelled,
                timed_out=outcome.timed_out,
                detached=outcome.detached,
                bytes_out=live.bytes_out,
            )
            self.observer.command_finished(live.info, outcome, live.bytes_out)
            return outcome
        finally:
            if not live.finished:  # the run itself failed: readers must still get an end
                live.finish(RunOutcome(_ABORTED_CODE, 0, cancelled=True))
            if job.detach_timer is not None:
                job.detach_timer.cancel()
            if job.input is not None:
                job.input.close()
            self.job = None
            self.last = live
            self.touch()

    def cancel(self, command_id: str | None, client: ClientInfo | None) -> None:
        """Stop the running command on any authenticated client's request.

        Args:
            command_id: the command meant; None means the running one.
            client: who asked (audit).

        Raises:
            ProtocolViolation: nothing runs, or not the command named.
        """
        job = self.job
        if job is None:
            raise ProtocolViolation("no command is running", message_id=command_id)
        if command_id is not None and command_id != job.id:
            raise ProtocolViolation(f"no command {command_id!r} is running", message_id=command_id)
        log_event("command_cancel", id=job.id)
        self.observer.cancel_requested(client, job.id, "cancelled")
        job.run.stop("cancelled")

    def stop_for_shutdown(self) -> Job | None:
        """Cancel the running command because the agent stops; return its job."""
        job = self.job
        if job is not None:
            self.observer.cancel_requested(None, job.id, "shutdown")
            job.run.stop("cancelled")
        return job

    # --- connections ------------------------------------------------------------
    def join(self, connection: object, send: Send) -> None:
        """Replay the initial command to a new connection, then its live messages (v1)."""
        if self.initial is not None:
            self.initial.attach(connection, send)

    def leave(self, connection: object) -> None:
        """Detach a closed connection from every command it followed."""
        self.connections.discard(connection)
        for live in {self.job.live if self.job else None, self.last, self.initial}:
            if live is not None:
                live.detach(connection)

    def attach(
        self,
        connection: object,
        send: Send,
        command_id: str,
        after_seq: int,
        client: ClientInfo | None = None,
    ) -> None:
        """Follow a retained command from ``after_seq`` (replay, then live).

        Raises:
            ProtocolViolation: no such command, or ``after_seq`` beyond its last seq.
        """
        live = self.find(command_id)
        if live is None:
            raise ProtocolViolation(
                f"no command {command_id!r} to attach to (the session keeps the running "
                "command and the last finished one)",
                message_id=command_id,
            )
        try:
            live.attach(connection, send, after_seq)
        except ValueError as exc:
            raise ProtocolViolation(str(exc), message_id=command_id) from None
        log_event("attached", id=command_id, after_seq=after_seq, state=live.state)
        if client is not None:
            self.observer.attached(client, command_id, after_seq)

    def _readers_changed(self, live: LiveCommand) -> None:
        job = self.job
        if job is None or job.live is not live or job.initial:
            return
        if live.readers:
            if job.detach_timer is not None:
                job.detach_timer.cancel()
                job.detach_timer = None
                log_event("command_reattached", id=job.id)
            return
        timeout = self.config.detach_timeout_s
        if job.detach_timer is not None or timeout <= 0:
            return
        log_event("command_detached", id=job.id, timeout_s=timeout)
        job.detach_timer = asyncio.get_running_loop().call_later(timeout, self._detach_expired, job)

    def _detach_expired(self, job: Job) -> None:
        job.detach_timer = None
        if self.job is not job or job.live.readers:
            return
        log_event("detach_timeout", level="warning", id=job.id)
        self.observer.cancel_requested(None, job.id, "detached")
        job.run.stop("detached")

    # --- input ------------------------------------------------------------------
    def _input_job(self, command_id: str) -> Job:
        live = self.find(command_id)
        if live is None:
            raise ProtocolViolation(f"no command {command_id!r}", message_id=command_id)
        job = self.job
        if job is None or job.live is not live:
            raise ProtocolViolation(
                f"command {command_id!r} has finished; it takes no more input",
                message_id=command_id,
            )
        return job

    async def write_stdin(self, command_id: str, data: str | None, send: Send) -> None:
        """Queue input for a running command, or its EOF (``data`` None).

        Input from several connections is written in the order it arrived
        (:mod:`session_runtime.agent.inbox`); a write that fails later is
        reported to ``send`` as an ``error``.

        Raises:
            ProtocolViolation: unknown or finished command, started without
                ``stdin``, or its input already closed.
        """
        job = self._input_job(command_id)
        if job.input is None:
            raise ProtocolViolation(
                f'command {command_id!r} was not started with "stdin": true; its stdin is '
                "/dev/null",
                message_id=command_id,
            )
        if job.eof:
            raise ProtocolViolation(
                f"the input of command {command_id!r} is closed (EOF was sent)",
                message_id=command_id,
            )
        if data is None:
            job.eof = True

        async def refused(reason: str) -> None:
            with contextlib.suppress(SinkGone):
                await send(
                    frame(
                        ErrorMessage(
                            code="bad_request",
                            message=f"the input of command {command_id!r} is closed: {reason}",
                            id=command_id,
                        )
                    )
                )

        try:
            await job.input.put(data, refused)
        except StdinClosed as exc:
            raise ProtocolViolation(
                f"the input of command {command_id!r} is closed: {exc}", message_id=command_id
            ) from None

    def resize(self, command_id: str, cols: int, rows: int) -> None:
        """Resize a running ``tty`` command's terminal.

        Raises:
            ProtocolViolation: unknown or finished command, or not a ``tty`` command.
        """
        job = self._input_job(command_id)
        if not job.live.info.tty:
            raise ProtocolViolation(
                f'command {command_id!r} does not run under a terminal (start it with "tty")',
                message_id=command_id,
            )
        try:
            job.run.resize(cols, rows)
        except (ValueError, NotImplementedError) as exc:
            raise ProtocolViolation(
                f"cannot resize command {command_id!r}: {exc}", message_id=command_id
            ) from None


async def _spawned(job: Job) -> None:
    """Wait until the job's process exists (input may arrive right after ``command``).

    A job cancelled while queued never runs: its task's end is waited for too.
    """
    if job.task is None or job.task.done():
        return
    spawned = asyncio.ensure_future(job.run.spawned.wait())
    try:
        await asyncio.wait({spawned, job.task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        spawned.cancel()
