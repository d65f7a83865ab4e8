"""The README's first command (scripts/quickstart.sh) and ``local up|status|down`` end to end.

The script runs from a copy of the checkout's layout whose bootstrap step is a
no-op (the test command has just bootstrapped), against its own state
directory; the stack it starts is always taken down, and the test proves by
pid and port that ``local down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_runtime.backends.local import LocalBackend, LocalStack
from tests.support.local_stack import assert_stack_gone, stack_processes

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "quickstart.sh"
_TIMEOUT_S = 180


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory shaped like the checkout: the real script, a no-op bootstrap, the venv."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "quickstart.sh")
    bootstrap = root / "scripts" / "bootstrap.sh"
    bootstrap.write_text("#!/usr/bin/env bash\nexit 0\n")
    bootstrap.chmod(0o755)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return root


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    try:
        yield state
    finally:
        LocalStack(state).down()


def _env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env["WEBSOCKET_LOCAL_STATE_DIR"] = str(state_dir)
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )


def test_quickstart_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap.sh installs it)")
    proc = _run(["shellcheck", "--severity=style", str(SCRIPT)], dict(os.environ), REPO)
    assert proc.returncode == 0, proc.stdout


def test_quickstart_help_and_usage_errors(checkout: Path) -> None:
    script = str(checkout / "scripts" / "quickstart.sh")
    shown = _run([script, "--help"], dict(os.environ), checkout)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: scripts/quickstart.sh")
    wrong = _run([script, "--bogus"], dict(os.environ), checkout)
    assert wrong.returncode == 2 and "Usage:" in wrong.stderr


def test_quickstart_runs_gam_version_through_the_proxy_and_local_down_leaves_nothing(
    checkout: Path, state_dir: Path
) -> None:
    env = _env(state_dir)
    proc = _run([str(checkout / "scripts" / "quickstart.sh")], env, checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GAM" in proc.stdout
    assert "gamgui-session local down" in proc.stdout
    default = LocalBackend(state_dir).get("default")
    assert default is not None
    assert default.token.get_secret_value() not in proc.stdout + proc.stderr

    cli = [str(checkout / ".venv" / "bin" / "gamgui-session")]
    up = _run([*cli, "local", "up", "--json"], env, checkout)  # idempotent on a running stack
    assert up.returncode == 0, up.stderr
    data = json.loads(up.stdout)
    assert set(data) == {"proxy_url", "env"}
    assert data["proxy_url"].startswith("http://127.0.0.1:")
    assert data["env"]["WEBSOCKET_BACKEND"] == "local"
    assert data["env"]["WEBSOCKET_LOCAL_STATE_DIR"] == str(state_dir.resolve())
    assert data["env"]["WEBSOCKET_PROXY_SERVICE_URL"] == data["proxy_url"]
    status = _run([*cli, "local", "status", "--json"], env, checkout)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True

    captured = stack_processes(LocalStack(state_dir))
    down = _run([*cli, "local", "down"], env, checkout)
    assert down.returncode == 0, down.stderr
    assert_stack_gone(captured)
    after = _run([*cli, "local", "status", "--json"], env, checkout)
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False
    send = _run([*cli, "send", "--id", "default", "--", "version"], env, checkout)
    assert send.returncode == 1
    assert send.stderr.startswith("error: The local stack is not running")
    assert "gamgui-session local up" in send.stderr
    proxy = _run([*cli, "test-proxy", "--json"], env, checkout)
    assert proxy.returncode == 1
    assert json.loads(proxy.stdout)["first_failure"]["name"] == "backend"
