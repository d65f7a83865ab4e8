"""A full scenario with known secrets: no token or credential ever shows outside its file.

A fresh stack is started with credential files of known content; sessions are
created, used, listed, tested and closed through the CLI (as a subprocess)
and through the Python API, including the failures a user meets (wrong token,
missing session, busy session). Then every log and state file of the stack,
every CLI output and every exception message is searched for every token and
every credential value. Only the files whose job is to hold them are exempt:
the token files, the credential "Secrets" and their copies in each session's
private GAM directory.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.agent.credentials import CREDENTIAL_FILES
from session_runtime.client import SessionConnection
from session_runtime.errors import SessionError
from session_runtime.manager import SessionManager
from session_runtime.settings import WebSocketSettings
from tests.security.conftest import require_stack_tools
from tests.support.local_stack import running_stack

_CLI_TIMEOUT_S = 120


class Scenario:
    """What the scenario produced: outputs, exception texts, and the secrets to look for."""

    def __init__(self, state_dir: Path, credentials: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.credentials = credentials
        self.tokens: set[str] = set()
        self.outputs: list[tuple[str, str]] = []  # (what, text)

    def remember(self, what: str, text: str) -> None:
        self.outputs.append((what, text))

    def secrets(self) -> dict[str, str]:
        found = {f"token {i}": t for i, t in enumerate(sorted(self.tokens))}
        found.update({f"credential {k}": v for k, v in self.credentials.items()})
        return found


def _cli(env: dict[str, str], scenario: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "session_runtime", *args],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=_CLI_TIMEOUT_S,
        cwd=scenario.state_dir.parent,
        check=False,
    )
    scenario.remember(f"cli {' '.join(args)} stdout", proc.stdout)
    scenario.remember(f"cli {' '.join(args)} stderr", proc.stderr)
    return proc


def _expect_error(scenario: Scenario, what: str, call: object) -> SessionError:
    assert callable(call)
    with pytest.raises(SessionError) as info:
        call()
    scenario.remember(f"{what}: str", str(info.value))
    scenario.remember(f"{what}: repr", repr(info.value))
    scenario.remember(f"{what}: args", repr(info.value.args))
    return info.value


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    require_stack_tools()
    root = tmp_path_factory.mktemp("secrets")
    state_dir = root / "stack"
    credentials = {
        name: f"KNOWN-CREDENTIAL-{name}-{secrets.token_hex(12)}" for name in CREDENTIAL_FILES
    }
    secret_dir = state_dir / "credentials" / naming.DEFAULT_CREDENTIALS_SECRET
    secret_dir.mkdir(parents=True, mode=0o700)
    for name, value in credentials.items():
        (secret_dir / name).write_text(value, encoding="utf-8")
    scenario = Scenario(state_dir, credentials)

    with running_stack(state_dir) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
        env.update(
            {"WEBSOCKET_BACKEND": "local", "WEBSOCKET_LOCAL_STATE_DIR": str(state_dir)}
        )  # fmt: skip
        backend = stack.backend()
        default = backend.get("default")
        assert default is not None
        scenario.tokens.add(default.token.get_secret_value())

        # --- through the CLI ---
        assert _cli(env, scenario, "create", "--id", "cli-one", "--json").returncode == 0
        cli_one = backend.get("cli-one")
        assert cli_one is not None
        scenario.tokens.add(cli_one.token.get_secret_value())
        assert _cli(env, scenario, "create", "--id", "cli-two").returncode == 0
        cli_two = backend.get("cli-two")
        assert cli_two is not None
        scenario.tokens.add(cli_two.token.get_secret_value())
        sent = _cli(env, scenario, "send", "--id", "cli-one", "--", "version")
        assert sent.returncode == 0, sent.stderr
        assert (
            _cli(env, scenario, "send", "--id", "cli-one", "--json", "--", "version").returncode
            == 0
        )
        assert _cli(env, scenario, "list").returncode == 0
        assert _cli(env, scenario, "list", "--json").returncode == 0
        assert _cli(env, scenario, "test-session", "--id", "cli-one").returncode == 0
        assert _cli(env, scenario, "test-session", "--id", "default", "--json").returncode == 0
        assert _cli(env, scenario, "send", "--id", "nobody", "--", "version").returncode != 0
        assert _cli(env, scenario, "close", "--id", "cli-one").returncode == 0
        assert _cli(env, scenario, "close", "--id", "cli-two", "--json").returncode == 0
        assert _cli(env, scenario, "reap", "--dry-run").returncode == 0
        assert _cli(env, scenario, "local", "status").returncode == 0
        assert _cli(env, scenario, "doctor").returncode in (0, 1)

        # --- through the Python API ---
        manager = SessionManager.from_settings(
            WebSocketSettings(
                _env_file=None,
                backend="local",
                local_state_dir=state_dir,
            )
        )
        info = manager.create_session("api-one")
        token = info.token.get_secret_value()
        scenario.tokens.add(token)
        scenario.remember("SessionInfo repr", repr(info))
        scenario.remember("SessionInfo str", str(info))
        scenario.remember("public_dict", repr(info.public_dict()))
        result = manager.send_command("api-one", "version")
        assert result.exit_code == 0
        scenario.remember("CommandResult", repr(result))
        scenario.remember("list_sessions", repr(manager.list_sessions()))
        scenario.remember("get_session", repr(manager.get_session("api-one")))
        url = info.websocket_url
        _expect_error(scenario, "wrong token", lambda: SessionConnection.open(url, token[::-1]))
        _expect_error(
            scenario,
            "other token",
            lambda: SessionConnection.open(url, default.token.get_secret_value()),
        )
        _expect_error(
            scenario,
            "token in the URL",
            lambda: SessionConnection.open(f"{url}?token={token}", "x"),
        )
        _expect_error(
            scenario, "missing session", lambda: manager.send_command("nobody", "version")
        )
        _expect_error(
            scenario,
            "refused port",
            lambda: SessionConnection.open("ws://127.0.0.1:1/ws/session/api-one/", token),
        )
        with manager.connect("api-one") as conn:
            scenario.remember("connection repr", repr(conn))
            scenario.remember("welcome", repr(conn.welcome))
        assert manager.close_session("api-one")
        scenario.remember("reap", repr(manager.reap()))
        yield scenario


def _exempt(path: Path, state_dir: Path) -> bool:
    """Files whose job is to hold a secret: token files, credential Secrets and GAM's copies."""
    parts = path.relative_to(state_dir).parts
    return parts[0] in ("tokens", "credentials") or (
        parts[0] == "homes" and len(parts) > 2 and parts[2] == "gamcfg"
    )


def test_the_scenario_put_its_secrets_in_play(scenario: Scenario) -> None:
    assert len(scenario.tokens) == 4  # default, two CLI sessions, one API session
    copied = scenario.state_dir / "homes" / "default" / "gamcfg" / "oauth2.txt"
    assert copied.read_text(encoding="utf-8") == scenario.credentials["oauth2.txt"]
    stdout = dict(scenario.outputs)["cli send --id cli-one -- version stdout"]
    assert "GAM" in stdout


def test_no_log_or_state_file_of_the_stack_holds_a_token_or_a_credential(
    scenario: Scenario,
) -> None:
    searched = []
    for path in sorted(scenario.state_dir.rglob("*")):
        if not path.is_file() or _exempt(path, scenario.state_dir):
            continue
        data = path.read_bytes()
        searched.append(path.relative_to(scenario.state_dir).as_posix())
        for what, value in scenario.secrets().items():
            assert value.encode() not in data, f"{what} found in {path}"
    assert {"logs/nginx-access.log", "logs/dnsmasq.log", "logs/session-default.log"} <= set(
        searched
    )
    assert any(p.startswith("logs/session-api-one") for p in searched) or any(
        "api-one" in p for p in searched
    )


def test_no_cli_output_or_exception_message_holds_a_token_or_a_credential(
    scenario: Scenario,
) -> None:
    assert len(scenario.outputs) > 30
    for what, text in scenario.outputs:
        for secret_name, value in scenario.secrets().items():
            assert value not in text, f"{secret_name} in {what}: {text[:300]!r}"
