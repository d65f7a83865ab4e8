"""Audit lines and metrics of real GAM commands sent through the real local stack.

Through nginx to an agent running gam7: one command that works, one that carries
a password and fails (no credentials here), one cancelled while it waits for input.
The agent's raw audit lines (the stack's audit file and the session's stdout log)
are parsed and searched for the secret; its /metrics page is parsed before and after.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from tests.integration.conftest import SessionFactory
from tests.support.live import Peer

SECRET = "S3cr3t-Pw!zq"
USER = "alice@example.com"


def _metrics(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}{naming.METRICS_PATH}", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _wait_for(probe: Callable[[], list[dict[str, object]]]) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20  # a bound for a broken agent, not a measurement
    while not (found := probe()):
        assert time.monotonic() < deadline, "the agent never logged it"
        time.sleep(0.05)
    return found


def _audit(path: str, session_id: str) -> list[dict[str, object]]:
    lines = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            record = json.loads(raw)
            if record.get("session_id") == session_id and record.get("event") == "audit":
                lines.append(record)
    return lines


def test_each_command_is_audited_once_started_once_finished_and_counted_exactly(
    local_stack: LocalStack,
    backend: LocalBackend,
    new_session: SessionFactory,
    proxy_ws_base: str,
) -> None:
    session = new_session()
    sid = session.session_id
    assert session.agent_address is not None
    before = _metrics(session.agent_address)
    peer = Peer(
        f"{proxy_ws_base}{naming.session_path(sid)}",
        session.token.get_secret_value(),
        headers=[f"{naming.HEADER_USER}: {USER}"],
        timeout=60,
    )
    try:

        def run(command_id: str, **message: object) -> dict[str, object]:
            peer.send(type="command", id=command_id, **message)
            return peer.until(lambda f: f["type"] == "exit" and f["id"] == command_id)[-1]

        ok = run("c-ok", command="gam version")
        failed = run("c-pw", command=f"gam update user nobody@example.com password '{SECRET}'")
        peer.send(type="command", id="c-cancel", command="batch -", stdin=True)
        peer.until(lambda f: f["type"] == "started" and f["id"] == "c-cancel")
        peer.send(type="cancel", id="c-cancel")
        cancelled = peer.until(lambda f: f["type"] == "exit" and f["id"] == "c-cancel")[-1]
    finally:
        peer.ws.close()
    assert ok["code"] == 0
    assert failed["code"] != 0
    assert cancelled["cancelled"] is True

    # -- the audit trail: the stack's audit file, and stdout (the session log) -------------
    audit_log = local_stack.state.audit_log
    lines = _audit(str(audit_log), sid)
    commands = [x for x in lines if x["action"] == "command"]
    by_id: dict[str, list[dict[str, object]]] = {}
    for line in commands:
        by_id.setdefault(str(line["command_id"]), []).append(line)
    assert set(by_id) == {"c-ok", "c-pw", "c-cancel"}
    exits = {"c-ok": ok, "c-pw": failed, "c-cancel": cancelled}
    for command_id, (started, finished) in by_id.items():
        assert (started["phase"], finished["phase"]) == ("started", "finished")
        assert finished["exit_code"] == exits[command_id]["code"]
        assert isinstance(finished["duration_ms"], int) and finished["duration_ms"] > 0
        assert finished["gam_mode"] in ("warm", "cold")
        for line in (started, finished):
            assert line["client"] == "127.0.0.1"
            assert line["user"] == USER
            assert line["connection_id"]
    assert by_id["c-pw"][0]["argv"] == ["update", "user", "nobody@example.com", "password", "***"]
    assert by_id["c-cancel"][1]["cancelled"] is True
    assert by_id["c-pw"][1]["cancelled"] is False
    assert next(x for x in lines if x["action"] == "cancel")["user"] == USER
    assert {x["action"] for x in lines} >= {"connect", "command", "cancel"}
    # The agent sees the close a moment after the client sent it.
    disconnects = _wait_for(
        lambda: [x for x in _audit(str(audit_log), sid) if x["action"] == "disconnect"]
    )
    assert disconnects[0]["user"] == USER and disconnects[0]["close_code"] == 1000

    raw_file = local_stack.state.audit_log.read_text(encoding="utf-8")
    raw_stdout = local_stack.state.session_log(sid).read_text(encoding="utf-8")
    assert SECRET not in raw_file
    assert SECRET not in raw_stdout
    assert raw_stdout.count('"action":"command"') == 6  # stdout has the very same lines

    # -- metrics moved by exactly the three commands ---------------------------------------
    after = _metrics(session.agent_address)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("gamgui_agent_commands_started_total") == 3
    assert delta("gamgui_agent_commands_finished_total", result="ok") == 1
    assert delta("gamgui_agent_commands_finished_total", result="error") == 1
    assert delta("gamgui_agent_commands_finished_total", result="cancelled") == 1
    assert delta("gamgui_agent_commands_finished_total", result="timed_out") == 0
    assert delta("gamgui_agent_command_duration_seconds_count") == 3
    assert delta("gamgui_agent_connections_total") == 1
    assert delta("gamgui_agent_output_bytes_total") > 0
    for mode in ("warm", "cold"):  # the audit lines and the counter agree on how GAM ran
        ran = sum(1 for _, finished in by_id.values() if finished["gam_mode"] == mode)
        assert delta("gamgui_agent_gam_runs_total", mode=mode) == ran
