"""The session limit under concurrent creates from many processes, and a clean `down`."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.backends.local.processes import is_alive
from tests.support.local_stack import (
    assert_stack_gone,
    create_many_in_subprocess,
    running_stack,
    stack_processes,
)

MAX_SESSIONS = 5
CREATES = 20
#: Separate processes the creates come from (each creating from several threads).
PROCESSES = 4


def test_twenty_concurrent_creates_with_max_five_give_five_sessions_and_nothing_left_after_down(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    state_dir = tmp_path / "stack"
    with running_stack(state_dir, default_session=False) as stack:
        context = multiprocessing.get_context("spawn")
        ids = [f"s{i}" for i in range(CREATES)]
        batches = [ids[i::PROCESSES] for i in range(PROCESSES)]
        with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool:
            futures = [
                pool.submit(create_many_in_subprocess, str(state_dir), batch, MAX_SESSIONS, str(go))
                for batch in batches
            ]
            go.touch()
            outcomes = [o for f in futures for o in f.result(timeout=120)]

        created = [o for o in outcomes if o == "created"]
        refused = [o for o in outcomes if o != "created"]
        assert len(created) == MAX_SESSIONS
        assert refused == [
            f"SessionLimitError: Maximum number of sessions ({MAX_SESSIONS}) reached"
        ] * (CREATES - MAX_SESSIONS)

        backend = LocalBackend(state_dir)
        sessions = backend.list()
        assert len(sessions) == MAX_SESSIONS
        assert len({s.agent_address for s in sessions}) == MAX_SESSIONS
        for session in sessions:
            backend.wait_ready(session.session_id, timeout=30)

        captured = stack_processes(stack)
        assert len(captured.processes) == 2 + MAX_SESSIONS
        for session in sessions:
            assert backend.delete(session.session_id)
        assert backend.list() == []
    assert_stack_gone(captured)
    assert LocalStack(state_dir).status().running is False
    assert not (state_dir / "stack.json").exists()


def test_down_stops_sessions_that_were_never_closed(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    with running_stack(state_dir) as stack:
        captured = stack_processes(stack)
        assert len(captured.processes) == 3  # dnsmasq, nginx, the default session
    assert_stack_gone(captured)
    assert LocalBackend(state_dir).list() == []


def test_a_stack_started_by_one_process_is_stopped_by_another(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "session_runtime",
            "local",
            "up",
            "--state-dir",
            str(state_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    stack = LocalStack(state_dir)
    try:
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["proxy_url"] == stack.proxy_url()
        captured = stack_processes(stack)
        assert all(is_alive(p) for p in captured.processes)  # they outlived `local up`
    finally:
        stack.down()
    assert_stack_gone(captured)
