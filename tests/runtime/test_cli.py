"""The real ``gamgui-session`` as a subprocess against the local stack.

Only WEBSOCKET_BACKEND and WEBSOCKET_LOCAL_STATE_DIR are set: the proxy URL and
connection template come from the running stack. Every run is checked for
leaked tokens: no session's token may appear in any output unless the command
was asked for it with ``--show-token``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from session_runtime.backends.local import LocalBackend
from tests.runtime.conftest import StackHandle

Cli = Callable[..., subprocess.CompletedProcess[str]]

_CLI_TIMEOUT_S = 120


def _cli_argv() -> list[str]:
    script = Path(sys.executable).parent / "gamgui-session"
    return [str(script)] if script.exists() else [sys.executable, "-m", "session_runtime"]


@pytest.fixture(scope="module")
def cli_env(local_stack: StackHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env["WEBSOCKET_BACKEND"] = "local"
    env["WEBSOCKET_LOCAL_STATE_DIR"] = str(local_stack.state_dir)
    return env


@pytest.fixture
def cli(cli_env: dict[str, str], local_stack: StackHandle, tmp_path: Path) -> Cli:
    backend = LocalBackend(local_stack.state_dir)

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        show_token: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*_cli_argv(), *args],
            env={**cli_env, **(env or {})},
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT_S,
            cwd=tmp_path,  # no stray .env
            check=False,
        )
        if not show_token:
            for session in backend.list():
                token = session.token.get_secret_value()
                assert token not in proc.stdout, f"token of {session.session_id} on stdout"
                assert token not in proc.stderr, f"token of {session.session_id} on stderr"
        return proc

    return run


def test_send_runs_gam_version_in_the_default_session_with_no_urls_exported(cli: Cli) -> None:
    proc = cli("send", "--id", "default", "--", "version")
    assert proc.returncode == 0, proc.stderr
    assert "GAM" in proc.stdout


def test_send_exits_with_the_commands_own_exit_code(cli: Cli) -> None:
    as_json = cli("send", "--id", "default", "--json", "--", "no-such-gam-command")
    code = json.loads(as_json.stdout)["exit_code"]
    assert code != 0
    assert as_json.returncode == min(code, 255)
    streamed = cli("send", "--id", "default", "--", "no-such-gam-command")
    assert streamed.returncode == as_json.returncode


def test_create_json_gives_the_session_fields_and_the_token_only_when_asked(
    cli: Cli, local_stack: StackHandle
) -> None:
    proc = cli("create", "--id", "cli-json", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"session_id", "websocket_url", "websocket_path", "status", "created_at"}
    assert data["session_id"] == "cli-json"
    assert data["status"] == "ready"
    assert data["websocket_path"] == "/ws/session/cli-json/"
    assert data["websocket_url"].startswith("ws://127.0.0.1:")
    assert data["websocket_url"].endswith("/ws/session/cli-json/")
    again = cli("create", "--id", "cli-json", "--json", "--show-token", show_token=True)
    assert again.returncode == 0, again.stderr
    token = json.loads(again.stdout)["token"]
    stored = LocalBackend(local_stack.state_dir).get("cli-json")
    assert stored is not None and stored.token.get_secret_value() == token
    assert cli("close", "--id", "cli-json").returncode == 0


def test_a_session_lives_from_create_to_close(cli: Cli) -> None:
    created = cli("create", "--id", "cli-life")
    assert created.returncode == 0, created.stderr
    assert "session cli-life ready" in created.stdout
    listed = cli("list", "--json")
    assert listed.returncode == 0
    assert "cli-life" in [s["session_id"] for s in json.loads(listed.stdout)]
    connect = cli("connect", "--id", "cli-life", stdin="# a comment\n\nversion\n")
    assert connect.returncode == 0, connect.stderr
    assert "GAM" in connect.stdout
    check = cli("test-session", "--id", "cli-life", "--json")
    assert check.returncode == 0, check.stdout
    report = json.loads(check.stdout)
    assert report["ok"] is True and report["first_failure"] is None
    assert [s["name"] for s in report["steps"]] == ["exists", "ready", "handshake", "command"]
    closed = cli("close", "--id", "cli-life", "--json")
    assert closed.returncode == 0 and json.loads(closed.stdout) == {
        "session_id": "cli-life",
        "closed": True,
    }
    again = cli("close", "--id", "cli-life")
    assert again.returncode == 1 and "no session 'cli-life'" in again.stderr
    assert "cli-life" not in cli("list").stdout


def test_test_proxy_passes_on_the_local_stack(cli: Cli) -> None:
    text = cli("test-proxy")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "proxy check passed" in text.stdout
    report = json.loads(cli("test-proxy", "--json").stdout)
    assert report["ok"] is True
    assert [s["name"] for s in report["steps"]] == [
        "backend",
        "health",
        "invalid-path-refused",
        "unknown-session-refused",
        "default-session",
    ]


def test_an_unknown_session_is_one_error_line_and_exit_1(cli: Cli) -> None:
    proc = cli("send", "--id", "cli-ghost", "--", "version")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: Error joining session")
    assert proc.stderr.count("\n") == 1 and "hint:" in proc.stderr
    as_json = cli("test-session", "--id", "cli-ghost", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first_failure"]["name"] == "exists"


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "--id", "UPPER", "--", "version"],
        ["send", "--id", "default"],
        ["create", "--id", "a.b"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, argv: list[str]) -> None:
    assert cli(*argv).returncode == 2


def test_disabled_sessions_give_the_classic_error(cli: Cli) -> None:
    proc = cli("create", "--id", "cli-off", "--json", env={"WEBSOCKET_ENABLED": "false"})
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["error"] == "SessionsDisabledError"
    assert data["message"] == "WebSocket sessions are disabled"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBSOCKET_MAX_SESSIONS", "0"),
        ("WEBSOCKET_MAX_SESSIONS", "many"),
        ("WEBSOCKET_SESSION_CONNECTION_TEMPLATE", "ws://127.0.0.1:1/ws/session/"),
        ("WEBSOCKET_SESSION_PATH_TEMPLATE", "/ws/session/"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(
    cli: Cli, variable: str, value: str
) -> None:
    proc = cli("list", env={variable: value})
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Invalid WebSocket settings")
    assert variable in proc.stderr


def test_reap_dry_run_removes_nothing(cli: Cli) -> None:
    before = json.loads(cli("list", "--json").stdout)
    proc = cli("reap", "--dry-run", "--json")
    assert proc.returncode == 0
    assert all(r["removed"] is False for r in json.loads(proc.stdout))
    assert json.loads(cli("list", "--json").stdout) == before
