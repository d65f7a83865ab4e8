"""Faults on the real local stack: typed errors in bounded time, nothing lost, nothing left.

Killed agents, a closed session and a stack taken down under running commands,
a restarted nginx and a dead DNS server. Every long command is the fake GAM's
``pidfile``, so each test knows the GAM process it started and proves it gone.
Bounds are the clients' own timeouts: a hang would surface as a
``CommandTimeoutError`` (or a pytest-timeout), never as the typed error asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from session_runtime.backends.local.processes import is_alive, stop
from session_runtime.client import OutputChunk, SessionConnection
from session_runtime.errors import (
    BackendUnavailableError,
    ConnectionLostError,
    SessionConnectError,
    SessionNotFoundError,
    SessionUnreachableError,
)
from session_runtime.manager import SessionManager
from session_runtime.models import SessionStatus
from tests.reliability.conftest import manager_for
from tests.security.conftest import SecureStack
from tests.support.local_stack import assert_stack_gone, restart_nginx, stack_processes

#: Seconds a command the tests interrupt would otherwise run.
LONG_S = 120
#: The client's bound on any command here: far below LONG_S, far above a clean failure.
CLIENT_TIMEOUT_S = 20


def _start_long_command(
    conn: SessionConnection, pidfile: Path
) -> tuple[Iterator[OutputChunk], int]:
    """Start ``pidfile PATH LONG_S`` and return the open stream and GAM's pid."""
    chunks = conn.stream(["pidfile", str(pidfile), str(LONG_S)], timeout=CLIENT_TIMEOUT_S)
    first = next(chunks)
    assert first.data == "ready\n"
    return chunks, int(pidfile.read_text(encoding="utf-8"))


def _drain(chunks: Iterator[OutputChunk]) -> None:
    for _ in chunks:
        pass


def _assert_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait (bounded) for ``pid`` to exit; fail if it survives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def _settled_status(manager: SessionManager, session_id: str) -> SessionStatus:
    """The session's status once its agent is no longer starting or ready (bounded wait).

    The kernel closes a killed process's sockets before it becomes a zombie, so the
    client can see the close a moment before the process is gone.
    """
    deadline = time.monotonic() + 10
    status = manager.get_session(session_id).status
    while status in (SessionStatus.READY, SessionStatus.STARTING) and time.monotonic() < deadline:
        time.sleep(0.05)
        status = manager.get_session(session_id).status
    return status


def _agent_pid(stack: SecureStack, session_id: str) -> int:
    record = stack.stack.state.read_session(session_id)
    assert record is not None
    return record.process.pid


def test_a_sigkilled_agent_is_a_lost_connection_a_failed_session_and_reaped_with_its_command(
    stack: SecureStack, manager: SessionManager, tmp_path: Path
) -> None:
    manager.create_session("victim")
    manager.create_session("bystander")
    with manager.connect("victim") as conn, manager.connect("bystander") as other:
        _, other_pid = _start_long_command(other, tmp_path / "other.pid")
        chunks, gam_pid = _start_long_command(conn, tmp_path / "gam.pid")
        os.kill(_agent_pid(stack, "victim"), signal.SIGKILL)
        with pytest.raises(ConnectionLostError) as info:
            _drain(chunks)
        assert str(info.value).startswith("Failed to connect to session")

        assert _settled_status(manager, "victim") is SessionStatus.FAILED
        reaped = manager.reap()
        assert [(r.session_id, r.removed) for r in reaped] == [("victim", True)]
        assert reaped[0].reason.startswith("failed")
        _assert_gone(gam_pid)
        # Only the dead agent's command was killed: the other session's still runs.
        assert psutil.Process(other_pid).status() != psutil.STATUS_ZOMBIE
        other.cancel()
    _assert_gone(other_pid)
    with pytest.raises(SessionNotFoundError):
        manager.connect("victim")
    assert [s.session_id for s in manager.list_sessions()] == ["bystander"]
    assert manager.send_command("bystander", "echo fine").exit_code == 0


def test_closing_a_session_during_a_running_command_ends_it_cleanly(
    stack: SecureStack, manager: SessionManager, tmp_path: Path
) -> None:
    manager.create_session("busy")
    record = stack.stack.state.read_session("busy")
    assert record is not None
    with manager.connect("busy") as conn:
        chunks, gam_pid = _start_long_command(conn, tmp_path / "gam.pid")
        assert manager.close_session("busy")
        try:
            _drain(chunks)
        except ConnectionLostError:
            pass  # the agent went away first
        else:
            assert conn.last_exit is not None and conn.last_exit.cancelled
    _assert_gone(gam_pid)
    assert not is_alive(record.process)
    assert manager.list_sessions() == []
    assert manager.reap() == []


def test_local_down_during_activity_stops_everything_and_clients_get_typed_errors(
    stack: SecureStack, manager: SessionManager, tmp_path: Path
) -> None:
    ids = ["act-one", "act-two", "act-three"]
    for sid in ids:
        manager.create_session(sid)
    captured = stack_processes(stack.stack)
    with contextlib.ExitStack() as open_connections:
        streams = []
        gam_pids = []
        for sid in ids:
            conn = open_connections.enter_context(manager.connect(sid))
            chunks, pid = _start_long_command(conn, tmp_path / f"{sid}.pid")
            streams.append((conn, chunks))
            gam_pids.append(pid)
        idle = open_connections.enter_context(manager.connect(ids[0]))

        down = subprocess.run(
            [sys.executable, "-m", "session_runtime", "local", "down", "--state-dir",
             str(stack.stack.state.root)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr

        for conn, chunks in streams:
            try:
                _drain(chunks)
            except ConnectionLostError:
                continue
            assert conn.last_exit is not None and conn.last_exit.cancelled
        with pytest.raises(ConnectionLostError):
            idle.ping(timeout=CLIENT_TIMEOUT_S)
    for pid in gam_pids:
        _assert_gone(pid)
    assert_stack_gone(captured)
    assert stack.backend.list() == []
    with pytest.raises((SessionNotFoundError, BackendUnavailableError)):
        manager.connect(ids[0])


def test_restarting_nginx_closes_clients_who_reconnect_to_every_session(
    stack: SecureStack, manager: SessionManager
) -> None:
    ids = ["keep-one", "keep-two"]
    for sid in ids:
        manager.create_session(sid)
    agents = {sid: _agent_pid(stack, sid) for sid in ids}
    connections = [manager.connect(sid) for sid in ids]
    try:
        assert all(conn.ping() >= 0 for conn in connections)
        restart_nginx(stack.stack)
        for conn in connections:
            with pytest.raises(ConnectionLostError):
                conn.ping(timeout=CLIENT_TIMEOUT_S)
    finally:
        for conn in connections:
            conn.close()

    for sid in ids:
        assert manager.send_command(sid, f"echo {sid}").stdout.strip() == f'["{sid}"]'
    sessions = manager.list_sessions()
    assert [s.session_id for s in sessions] == ids
    assert all(s.status is SessionStatus.READY for s in sessions)
    assert {sid: _agent_pid(stack, sid) for sid in ids} == agents


def test_with_dns_down_a_connect_fails_cleanly_within_the_resolver_timeout(
    stack: SecureStack,
) -> None:
    # Created without a handshake through the proxy, so nginx has no cached answer.
    manager = manager_for(stack)
    manager.create_session("unresolved", wait=False)
    stack.backend.wait_ready("unresolved", timeout=30)
    record = stack.stack.state.read_stack()
    assert record is not None
    assert stop(record.dns)

    with pytest.raises(SessionConnectError) as info:
        manager.connect("unresolved")
    error = info.value
    assert isinstance(error, SessionUnreachableError)
    assert error.status in (502, 504) and error.code == "session_unavailable"
    assert str(error).startswith("Failed to connect to session")
    assert stack.backend.get("unresolved") is not None  # nothing was lost meanwhile
