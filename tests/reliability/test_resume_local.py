"""A proxy restart in the middle of a command: the client resumes, the caller sees nothing.

``SessionManager.send_command`` runs a command that ticks for a few seconds;
nginx is stopped and started again (a proxy pod restart) while it runs. The
client reconnects, attaches after the last seq it saw, and the result is the
complete output, exactly once.
"""

from __future__ import annotations

import json
import threading
import time

from session_runtime.backends.local.backend import agent_health
from session_runtime.manager import SessionManager
from session_runtime.models import CommandResult
from tests.security.conftest import SecureStack
from tests.support.local_stack import restart_nginx

TICKS = 40


def _busy(stack: SecureStack, session_id: str, timeout: float = 20.0) -> bool:
    record = stack.stack.state.read_session(session_id)
    assert record is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = agent_health(record.address, record.port)
        if health is not None and health.get("busy") is True:
            return True
        time.sleep(0.02)
    return False


def test_send_command_returns_the_whole_output_through_an_nginx_restart(
    stack: SecureStack, manager: SessionManager
) -> None:
    manager.create_session("through-restart")
    results: list[CommandResult | BaseException] = []

    def send() -> None:
        try:
            results.append(manager.send_command("through-restart", f"ticks {TICKS} 0.1"))
        except BaseException as exc:
            results.append(exc)

    worker = threading.Thread(target=send)
    worker.start()
    try:
        assert _busy(stack, "through-restart"), "the command never started"
        restart_nginx(stack.stack)
    finally:
        worker.join(120)
    assert not worker.is_alive()
    (result,) = results
    assert isinstance(result, CommandResult), result
    assert result.exit_code == 0
    assert result.stdout == "".join(f"tick {i}\n" for i in range(1, TICKS + 1))
    # It really was resumed: the connection dropped (1006) and a new one attached to it.
    log = stack.stack.state.session_log("through-restart").read_text(encoding="utf-8")
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    (started,) = [e for e in events if e.get("event") == "command_started"]
    after = events[events.index(started) :]
    assert any(e.get("event") == "disconnected" and e.get("code") == 1006 for e in after)
    assert any(e.get("event") == "attached" and e.get("id") == started["id"] for e in after)
