"""The classic scripts against a real cluster with the stack deployed (the e2e workflow).

Opt-in: GAMGUI_TEST_CLUSTER=1 and the WEBSOCKET_* settings pointing at the
cluster (WEBSOCKET_BACKEND=kubernetes, the proxy reached through a port-forward).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ),
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    binary = ROOT / ".venv" / "bin" / "gamgui-session"
    return subprocess.run(
        [str(binary) if binary.exists() else "gamgui-session", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ),
    )


@pytest.fixture
def session_id() -> Iterator[str]:
    sid = f"e2e-{secrets.token_hex(4)}"
    try:
        yield sid
    finally:
        cli("close", "--id", sid)


def test_the_proxy_check_passes_in_the_cluster() -> None:
    result = run("test-websocket-proxy.sh")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_session_passes_its_check_in_the_cluster() -> None:
    result = run("test-websocket-session.sh", "--id", "default")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_session_created_by_script_works_and_is_gone_after_close(session_id: str) -> None:
    created = run("create-websocket-session.sh", "--id", session_id)
    assert created.returncode == 0, created.stdout + created.stderr
    checked = run("test-websocket-session.sh", "--id", session_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    closed = cli("close", "--id", session_id)
    assert closed.returncode == 0, closed.stderr
    after = run("test-websocket-session.sh", "--id", session_id)
    assert after.returncode == 1
