"""The runtime's registry: creates by result, limit refusals, sessions by status, reaps."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from session_runtime.audit import AUDIT_LOGGER
from session_runtime.cli import main
from session_runtime.errors import SessionConnectError, SessionLimitError, SessionStartError
from session_runtime.manager import SessionManager
from session_runtime.metrics import RuntimeMetrics, create_result
from session_runtime.models import SessionStatus
from session_runtime.settings import load_settings
from tests.runtime.conftest import ManagerFactory
from tests.runtime.fakes import FakeBackend, FakeNetwork
from tests.support.prometheus import count, samples


def test_n_creates_with_one_refused_give_n_minus_one_successes_one_refusal_n_observations(
    manager_factory: ManagerFactory,
) -> None:
    n = 3
    manager = manager_factory(max_sessions=n - 1)
    backend = manager.backend.name
    for i in range(n - 1):
        manager.create_session(f"metrics-{i}")
    with pytest.raises(SessionLimitError):
        manager.create_session(f"metrics-{n - 1}")
    s = samples(manager.metrics)
    hist = "gamgui_session_create_duration_seconds_count"
    assert count(s, hist, backend=backend, result="ok") == n - 1
    assert count(s, hist, backend=backend, result="limit") == 1
    assert count(s, hist, backend=backend) == n
    assert count(s, "gamgui_session_limit_refusals_total", backend=backend) == 1
    assert count(s, "gamgui_sessions_list_up", backend=backend) == 1
    # The default session may be listed too; the ones created here are all ready.
    assert count(s, "gamgui_sessions", backend=backend, status="ready") >= n - 1
    assert count(s, "gamgui_sessions", backend=backend, status="failed") == 0


def _fake_manager(network: FakeNetwork | None = None) -> SessionManager:
    settings = load_settings(backend="local")
    return SessionManager(settings, FakeBackend(), connector=network or FakeNetwork())  # type: ignore[arg-type]


def test_a_failed_start_is_observed_with_its_result() -> None:
    manager = _fake_manager()
    assert isinstance(manager.backend, FakeBackend)
    manager.backend.fail_ready.add("broken")
    with pytest.raises(SessionStartError):
        manager.create_session("broken")
    s = samples(manager.metrics)
    assert count(s, "gamgui_session_create_duration_seconds_count", result="start_failed") == 1
    assert count(s, "gamgui_session_limit_refusals_total") == 0


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "ok"),
        (SessionLimitError(1), "limit"),
        (SessionStartError(cause="x"), "start_failed"),
        (RuntimeError("x"), "exception"),
    ],
)
def test_create_results_are_named(error: BaseException | None, result: str) -> None:
    assert create_result(error) == result


def test_an_unreadable_backend_list_reports_list_down_instead_of_failing_the_scrape() -> None:
    class Broken(FakeBackend):
        def list(self) -> list:  # type: ignore[type-arg]
            from session_runtime.errors import BackendError

            raise BackendError("the API is down")

    metrics = RuntimeMetrics(Broken())
    s = samples(metrics)
    assert s[("gamgui_sessions_list_up", (("backend", "fake"),))] == 0
    assert not any(name == "gamgui_sessions" for name, _ in s)


def test_reaps_are_counted_by_reason_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    manager = _fake_manager()
    assert isinstance(manager.backend, FakeBackend)
    manager.create_session("gone")
    manager.backend.sessions["gone"] = manager.backend.sessions["gone"].model_copy(
        update={"status": SessionStatus.FINISHED}
    )
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        assert manager.reap(dry_run=True)[0].removed is False
        assert manager.reap()[0].removed is True
    s = samples(manager.metrics)
    assert count(s, "gamgui_sessions_reaped_total", reason="finished") == 1  # not the dry run
    assert count(s, "gamgui_sessions_reaped_total", reason="idle") == 0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [(x["action"], x["session_id"], x["removed"]) for x in lines] == [
        ("reap", "gone", False),
        ("reap", "gone", True),
    ]
    assert lines[1]["reason_code"] == "finished" and lines[1]["event"] == "audit"


def test_handshake_retries_are_counted() -> None:
    failures: list[Exception] = [SessionConnectError(cause="refused") for _ in range(2)]
    manager = _fake_manager(FakeNetwork(failures=failures))
    manager.create_session("retry")
    s = samples(manager.metrics)
    assert count(s, "gamgui_session_handshake_retries_total") == 2
    assert count(s, "gamgui_session_create_duration_seconds_count", result="ok") == 1


def test_cli_metrics_prints_a_parseable_snapshot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = _fake_manager()
    manager.create_session("shown")
    monkeypatch.setattr("session_runtime.cli.metrics.make_manager", lambda: manager)
    assert main(["metrics"]) == 0
    text = capsys.readouterr().out
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"gamgui_sessions", "gamgui_session_create_duration_seconds"} <= families
    assert main(["metrics", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ready = [d for d in data if d["name"] == "gamgui_sessions" and d["labels"]["status"] == "ready"]
    assert ready == [
        {"name": "gamgui_sessions", "labels": {"backend": "fake", "status": "ready"}, "value": 1.0}
    ]


def test_every_runtime_metric_is_documented() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = docs[docs.index("## Metrics") :]
    for family in RuntimeMetrics(FakeBackend()).registry.collect():
        shown = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{shown}`" in section, shown


def test_cli_reap_writes_its_audit_lines_to_stderr_and_keeps_stdout_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = _fake_manager()
    assert isinstance(manager.backend, FakeBackend)
    manager.create_session("old")
    manager.backend.sessions["old"] = manager.backend.sessions["old"].model_copy(
        update={"status": SessionStatus.FINISHED}
    )
    monkeypatch.setattr("session_runtime.cli.sessions.make_manager", lambda: manager)
    assert main(["reap", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [r["session_id"] for r in json.loads(out)] == ["old"]
    (line,) = [json.loads(x) for x in err.splitlines()]
    assert line["event"] == "audit" and line["action"] == "reap"
    assert line["reason_code"] == "finished" and line["removed"] is True
