"""Audit lines from observer events: shape, redaction, the file, and never a crash."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from session_runtime.agent import log as agent_log
from session_runtime.agent.audit import AuditObserver
from session_runtime.agent.config import load_config
from session_runtime.agent.metrics import AgentMetrics
from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.agent.telemetry import Telemetry, build_telemetry
from session_runtime.audit import AuditWriter
from session_runtime.models import ReapedSession
from session_runtime.redact import REDACTED

ALICE = ClientInfo(connection_id="c1", client="203.0.113.9", user="alice@example.com")
REJECTED_CLIENT = ClientInfo(connection_id="c9", client="198.51.100.7", user=None)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _observer(tmp_path: Path | None = None) -> tuple[AuditObserver, io.StringIO]:
    out = io.StringIO()
    path = tmp_path / "audit.jsonl" if tmp_path else None
    return AuditObserver("sess-1", AuditWriter(stream=out, path=path)), out


def test_a_command_gives_one_started_and_one_finished_line_with_every_field() -> None:
    obs, out = _observer()
    cmd = CommandInfo("k1", ("info", "domain"), started_by=ALICE)
    obs.command_started(cmd)
    obs.command_finished(cmd, RunOutcome(code=3, duration_ms=42, gam_mode="warm"), 120)
    started, finished = _lines(out)
    common = {
        "event": "audit",
        "action": "command",
        "session_id": "sess-1",
        "command_id": "k1",
        "connection_id": "c1",
        "client": "203.0.113.9",
        "user": "alice@example.com",
        "argv": ["info", "domain"],
        "initial": False,
        "tty": False,
        "stdin": False,
    }
    assert started.items() >= {**common, "phase": "started"}.items()
    assert "exit_code" not in started
    assert (
        finished.items()
        >= {
            **common,
            "phase": "finished",
            "exit_code": 3,
            "duration_ms": 42,
            "bytes_out": 120,
            "cancelled": False,
            "timed_out": False,
            "gam_mode": "warm",
        }.items()
    )
    assert isinstance(finished["ts"], float)


def test_secrets_never_reach_the_raw_log_or_the_file(tmp_path: Path) -> None:
    obs, out = _observer(tmp_path)
    secrets = ["Hunter2!", "Cs-123", "ya29.tokenvalue"]
    cmd = CommandInfo(
        "k2",
        ("update", "user", "a@example.com", "PassWord", secrets[0], "clientsecret", secrets[1]),
        started_by=ALICE,
    )
    obs.command_started(cmd)
    obs.command_finished(cmd, RunOutcome(code=0, duration_ms=1), 0)
    obs.command_started(CommandInfo("k3", ("oauth", "info", "accesstoken", secrets[2])))
    obs.writer.close()
    raw_file = (tmp_path / "audit.jsonl").read_text()
    for raw in (out.getvalue(), raw_file):
        for secret in secrets:
            assert secret not in raw
    argv = _lines(out)[0]["argv"]
    assert isinstance(argv, list) and argv[4] == REDACTED
    assert raw_file == out.getvalue()


def test_the_audit_file_is_private_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier":1}\n')
    path.chmod(0o600)
    writer = AuditWriter(stream=io.StringIO(), path=path)
    writer.write({"a": 1})
    writer.close()
    assert path.read_text().splitlines() == ['{"earlier":1}', '{"a":1}']
    fresh = tmp_path / "new.jsonl"
    AuditWriter(stream=io.StringIO(), path=fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_an_unwritable_audit_file_is_reported_and_stdout_still_works(tmp_path: Path) -> None:
    out = io.StringIO()
    writer = AuditWriter(stream=out, path=tmp_path / "missing-dir" / "audit.jsonl")
    assert writer.file_error is not None and "missing-dir" in writer.file_error
    writer.write({"a": 1})
    assert out.getvalue() == '{"a":1}\n'


def test_connection_attach_cancel_and_reject_lines() -> None:
    obs, out = _observer()
    obs.connected(ALICE)
    obs.attached(ALICE, "k1", 7)
    obs.cancel_requested(ALICE, "k1", "cancelled")
    obs.cancel_requested(None, "k1", "timed_out")
    obs.rejected(REJECTED_CLIENT, 401, "token")
    obs.disconnected(ALICE, 1000)
    lines = _lines(out)
    assert [line["action"] for line in lines] == [
        "connect",
        "attach",
        "cancel",
        "cancel",
        "reject",
        "disconnect",
    ]
    assert lines[1]["after_seq"] == 7
    assert lines[3]["client"] is None and lines[3]["reason"] == "timed_out"
    assert lines[4]["status"] == 401
    assert lines[4]["client"] == "198.51.100.7"  # who was refused, never with a token
    assert lines[5]["close_code"] == 1000


def test_the_initial_command_has_no_connection() -> None:
    obs, out = _observer()
    obs.command_started(CommandInfo("initial", ("version",), initial=True))
    (line,) = _lines(out)
    assert line["initial"] is True
    assert line["connection_id"] is None and line["user"] is None


def test_a_failing_observer_neither_raises_nor_silences_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = io.StringIO()
    monkeypatch.setattr(agent_log, "_stream", log)

    class Broken:
        def __getattr__(self, name: str) -> object:
            def fail(*args: object) -> None:
                raise RuntimeError("boom")

            return fail

    metrics = AgentMetrics()
    telemetry = Telemetry([Broken(), metrics], metrics.registry)  # type: ignore[list-item]
    telemetry.command_started(CommandInfo("k", ("info",)))
    telemetry.command_started(CommandInfo("k", ("info",)))
    assert metrics.registry.get_sample_value("gamgui_agent_commands_started_total") == 2
    logged = [json.loads(x) for x in log.getvalue().splitlines()]
    assert [e["event"] for e in logged] == ["observer_failed"]  # once per kind


def test_the_audit_file_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    config = load_config(
        {
            "SESSION_ID": "sess-1",
            "SESSION_TOKEN": "t0k",
            "SESSION_AUDIT_FILE": str(path),
            "GAMCFGDIR": str(tmp_path / "cfg"),
        }
    )
    assert config.audit_file == path
    telemetry = build_telemetry(config)
    telemetry.connected(ALICE)
    assert json.loads(path.read_text())["action"] == "connect"


def test_every_audit_field_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = docs[docs.index("## Audit") : docs.index("## Metrics")]
    obs, out = _observer()
    cmd = CommandInfo("k", ("info",), started_by=ALICE)
    obs.connected(ALICE)
    obs.command_started(cmd)
    obs.command_finished(cmd, RunOutcome(0, 1), 0)
    obs.attached(ALICE, "k", 0)
    obs.cancel_requested(ALICE, "k", "cancelled")
    obs.rejected(REJECTED_CLIENT, 401, "token")
    obs.disconnected(ALICE, 1000)
    fields = {key for line in _lines(out) for key in line}
    fields |= set(ReapedSession.model_fields) - {"session_id"}
    for field in sorted(fields):
        assert f"`{field}`" in section, field
    for action in {str(line["action"]) for line in _lines(out)} | {"reap"}:
        assert f"`{action}`" in section, action
