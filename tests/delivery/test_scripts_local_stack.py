"""The session scripts against a real local stack (nginx, dnsmasq, agents on loopback).

The fixture starts the stack through the CLI in a temporary state directory and
always stops it, whatever the tests did.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
CLI = ROOT / ".venv" / "bin" / "gamgui-session"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not CLI.exists():
        pytest.skip("gamgui-session is not installed in .venv (run scripts/bootstrap.sh)")
    state_dir = tmp_path_factory.mktemp("local-stack") / "state"
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    base["WEBSOCKET_LOCAL_STATE_DIR"] = str(state_dir)
    try:
        up = _cli("local", "up", "--state-dir", str(state_dir), "--json", env=base)
        assert up.returncode == 0, up.stderr
        env = {**base, **json.loads(up.stdout)["env"]}
        yield env
    finally:
        down = _cli("local", "down", "--state-dir", str(state_dir), env=base)
        assert down.returncode == 0, down.stderr


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )


def test_a_created_session_passes_the_session_check(stack_env: dict[str, str]) -> None:
    created = run("create-websocket-session.sh", "--id", "script-a", "--json", env=stack_env)
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["session_id"] == "script-a"
    assert info.get("token") is None, "the token is printed only when asked for"
    checked = run("test-websocket-session.sh", "--id", "script-a", env=stack_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "session check passed" in checked.stdout


def test_creating_the_same_session_twice_succeeds_both_times(stack_env: dict[str, str]) -> None:
    for _ in range(2):
        created = run("create-websocket-session.sh", "--id", "script-b", env=stack_env)
        assert created.returncode == 0, created.stderr
        assert "session script-b ready" in created.stdout


def test_the_proxy_check_passes_with_the_default_session(stack_env: dict[str, str]) -> None:
    checked = run("test-websocket-proxy.sh", "--json", env=stack_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True


def test_checking_a_missing_session_exits_1_and_says_error_joining_session(
    stack_env: dict[str, str],
) -> None:
    checked = run("test-websocket-session.sh", "--id", "no-such-session", env=stack_env)
    assert checked.returncode == 1
    assert "Error joining session" in checked.stdout + checked.stderr


def test_a_closed_session_fails_its_check(stack_env: dict[str, str]) -> None:
    created = run("create-websocket-session.sh", "--id", "script-c", env=stack_env)
    assert created.returncode == 0, created.stderr
    closed = _cli("close", "--id", "script-c", env=stack_env)
    assert closed.returncode == 0, closed.stderr
    checked = run("test-websocket-session.sh", "--id", "script-c", env=stack_env)
    assert checked.returncode == 1


def test_a_failing_command_fails_the_session_check(stack_env: dict[str, str]) -> None:
    created = run("create-websocket-session.sh", "--id", "script-d", env=stack_env)
    assert created.returncode == 0, created.stderr
    checked = run(
        "test-websocket-session.sh", "--id", "script-d", "--command", "nosuchcommand", env=stack_env
    )
    assert checked.returncode == 1, checked.stdout


def test_create_says_sessions_are_disabled_when_they_are(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "WEBSOCKET_ENABLED": "false"}
    created = run("create-websocket-session.sh", "--id", "script-e", env=env)
    assert created.returncode == 1
    assert "WebSocket sessions are disabled" in created.stderr


def test_the_proxy_check_fails_when_the_proxy_is_not_there(stack_env: dict[str, str]) -> None:
    env = {
        **stack_env,
        "WEBSOCKET_PROXY_SERVICE_URL": "http://127.0.0.1:9",
        "WEBSOCKET_SESSION_CONNECTION_TEMPLATE": "ws://127.0.0.1:9/ws/session/{{SESSION_ID}}/",
    }
    checked = run("test-websocket-proxy.sh", env=env)
    assert checked.returncode == 1
    assert "FAIL" in checked.stdout
