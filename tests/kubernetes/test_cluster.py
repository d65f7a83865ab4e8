"""Against a real cluster with the stack deployed (kind in CI): the CLI end to end.

Opt in with ``GAMGUI_TEST_CLUSTER=1`` and the server's ``WEBSOCKET_*`` variables
(``WEBSOCKET_BACKEND=kubernetes``, namespace, proxy URL reachable from here,
e.g. through ``kubectl port-forward``); kubeconfig as for kubectl. Elsewhere the
whole module is skipped with that reason by ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.cluster

_TIMEOUT_S = 300


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session_runtime", *args],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def session_id() -> Iterator[str]:
    sid = f"cluster-{secrets.token_hex(4)}"
    try:
        yield sid
    finally:
        _cli("close", "--id", sid)


def test_doctor_passes_on_the_deployed_stack() -> None:
    done = _cli("doctor", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout
    assert report["ok"] is True


def test_a_session_is_created_ready_used_checked_and_closed(session_id: str) -> None:
    created = _cli("create", "--id", session_id, "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["session_id"] == session_id
    assert info["status"] == "ready"
    assert "token" not in info

    sent = _cli("send", "--id", session_id, "--", "version")
    assert sent.returncode == 0, sent.stderr
    assert "GAM" in sent.stdout

    checked = _cli("test-session", "--id", session_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    listed = json.loads(_cli("list", "--json").stdout)
    assert session_id in json.dumps(listed)

    closed = _cli("close", "--id", session_id)
    assert closed.returncode == 0, closed.stderr
    gone = _cli("test-session", "--id", session_id)
    assert gone.returncode != 0


def test_the_default_session_answers_through_the_proxy() -> None:
    checked = _cli("test-session")
    assert checked.returncode == 0, checked.stdout + checked.stderr
