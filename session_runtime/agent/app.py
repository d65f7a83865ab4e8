"""Start-up, signals and the idle exit: the agent's whole life in one coroutine.

The port is bound and a ``listening`` line logged before anything slow (the
initial command runs in the background; the GAM version comes from package
metadata, so nothing runs before the first command), so the
local backend and Kubernetes probes see the agent quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import serve

from session_runtime import naming
from session_runtime.agent import AGENT_VERSION
from session_runtime.agent.config import AgentConfig, TokenSpentError, load_config
from session_runtime.agent.credentials import copy_credentials
from session_runtime.agent.log import log_event
from session_runtime.agent.observe import AgentObserver
from session_runtime.agent.reaper import OrphanReaper, become_subreaper
from session_runtime.agent.server import SessionServer
from session_runtime.agent.session import Session
from session_runtime.agent.telemetry import build_telemetry
from session_runtime.errors import SettingsError
from session_runtime.protocol import (
    MAX_MESSAGE_BYTES,
    CommandMessage,
    ProtocolViolation,
    command_argv,
)

__all__ = ["main", "run_agent"]

_IDLE_TICK_S = 1.0
#: Seconds the shutdown waits for attached clients to be sent a cancelled command's exit.
_DRAIN_TIMEOUT_S = 2.0


async def run_agent(
    config: AgentConfig,
    observer: AgentObserver | None = None,
    registry: CollectorRegistry | None = None,
) -> int:
    """Serve one session until SIGTERM/SIGINT or the idle timeout; return the exit code.

    Args:
        config: the validated configuration.
        observer: receives the agent's events (audit, metrics); none recorded when omitted.
        registry: the metrics ``/metrics`` serves (empty when omitted).
    """
    copied = copy_credentials(config.credentials_dir, config.gam_config_dir)
    session = Session(config, copied, observer)
    server = SessionServer(session, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reason = "signal"

    async with serve(
        server.handle,
        config.host,
        config.port,
        process_request=server.process_request,
        select_subprotocol=server.select_subprotocol,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=16,
        write_limit=64 * 1024,
        ping_interval=config.ping_interval_s,
        ping_timeout=config.ping_interval_s,
        close_timeout=2,
        server_header=f"gamgui-session-agent/{AGENT_VERSION}",
    ) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        log_event(
            "listening",
            session_id=config.session_id,
            host=config.host,
            port=port,
            agent_version=AGENT_VERSION,
            credentials_found=copied,
            idle_timeout_s=config.idle_timeout_s,
            command_timeout_s=config.command_timeout_s,
            detach_timeout_s=config.detach_timeout_s,
            replay_bytes=config.replay_bytes,
        )
        sweeping = loop.create_task(OrphanReaper().run()) if become_subreaper() else None
        await session.launcher.start()
        initial = _initial_argv(config)
        if initial is not None:
            session.start_initial(initial)
        idle = loop.create_task(_idle_watch(session, stop))
        await stop.wait()
        if idle.done() and not idle.cancelled():
            reason = "idle"
        idle.cancel()
        await _stop_job(session)
        await session.launcher.close()
        if sweeping is not None:
            sweeping.cancel()
        ws_server.close(close_connections=True)  # code 1001, going away
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws_server.wait_closed(), 5)
    log_event("stopped", reason=reason)
    return 0


def _initial_argv(config: AgentConfig) -> list[str] | None:
    if config.initial_command is None:
        return None
    try:
        return command_argv(CommandMessage(command=config.initial_command))
    except ProtocolViolation as exc:
        log_event("initial_command_invalid", level="error", message=exc.message)
        return None


async def _stop_job(session: Session) -> None:
    job = session.stop_for_shutdown()
    if job is None or job.task is None:
        return
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(job.task), session.config.kill_grace_s + 2)
        # Its exit is still sent to every attached client before they are closed.
        await asyncio.wait_for(job.live.drained(), _DRAIN_TIMEOUT_S)


async def _idle_watch(session: Session, stop: asyncio.Event) -> None:
    timeout = session.config.idle_timeout_s
    if timeout <= 0:
        return await asyncio.Future()  # never idle; cancelled at shutdown
    tick = min(_IDLE_TICK_S, timeout / 4)
    while session.idle_for() < timeout:
        await asyncio.sleep(tick)
    log_event("idle_timeout", idle_s=round(session.idle_for(), 1), timeout_s=timeout)
    stop.set()


def main() -> int:
    """Entry point of ``python -m session_runtime.agent``; returns the exit status."""
    try:
        config = load_config()
    except SettingsError as exc:
        log_event("config_error", level="error", message=str(exc))
        print(f"session agent: {exc}", file=sys.stderr)
        return naming.AGENT_EXIT_TOKEN_SPENT if isinstance(exc, TokenSpentError) else 2
    log_event(
        "starting",
        session_id=config.session_id,
        gam_bin=config.gam_bin,
        initial_command=config.initial_command is not None,
    )
    telemetry = build_telemetry(config)
    try:
        return asyncio.run(run_agent(config, telemetry, telemetry.registry))
    except OSError as exc:
        log_event("listen_failed", level="error", message=f"{exc.strerror} ({exc.errno})")
        print(
            f"session agent: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        return 1
