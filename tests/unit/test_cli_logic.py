"""The CLI's parsing, output and exit codes, on an in-memory backend (no processes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from session_runtime.cli import build_parser, main
from session_runtime.cli._common import ProgressPrinter, command_exit_status
from session_runtime.cli.command import stream_command
from session_runtime.client import OutputChunk
from session_runtime.manager import SessionManager
from session_runtime.models import CommandResult, ProgressEvent, SessionStatus
from session_runtime.protocol import ExitMessage
from session_runtime.settings import load_settings
from tests.runtime.fakes import FakeBackend, FakeNetwork


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch, network: FakeNetwork) -> SessionManager:
    settings = load_settings(
        max_sessions=2,
        session_connection_template="ws://proxy.test/ws/session/{{SESSION_ID}}/",
    )
    mgr = SessionManager(settings, FakeBackend(), connector=network)
    monkeypatch.setattr(SessionManager, "from_settings", classmethod(lambda cls, s=None: mgr))
    return mgr


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_contract_command_is_registered() -> None:
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {
        "local",
        "create",
        "send",
        "connect",
        "close",
        "list",
        "reap",
        "test-session",
        "test-proxy",
        "doctor",
    } <= names


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["create", "--id", "UPPER"],
        ["send", "--id", "a.b", "--", "version"],
        ["send", "--id", "ok"],
        ["close"],
        ["no-such-command"],
        ["local"],
        ["reap", "--bogus"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _err = run(capsys, *argv)
    assert code == 2
    assert out == ""


def test_an_invalid_id_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "create", "--id=-x")
    assert code == 2
    assert "Invalid session id '-x'" in err and "DNS label" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "--help")
    assert code == 0
    assert "test-proxy" in out


def test_create_json_prints_the_session_fields_without_the_token(
    capsys: pytest.CaptureFixture[str], manager: SessionManager
) -> None:
    code, out, err = run(capsys, "create", "--id", "alice", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {
        "session_id",
        "websocket_url",
        "websocket_path",
        "status",
        "created_at",
    }
    assert data["websocket_url"] == "ws://proxy.test/ws/session/alice/"
    assert data["status"] == "ready"
    token = manager.backend.get("alice").token.get_secret_value()  # type: ignore[union-attr]
    assert token not in out + err


def test_create_show_token_prints_it_only_then(
    capsys: pytest.CaptureFixture[str], manager: SessionManager
) -> None:
    code, out, _err = run(capsys, "create", "--id", "bob", "--json", "--show-token")
    token = manager.backend.get("bob").token.get_secret_value()  # type: ignore[union-attr]
    assert code == 0
    assert json.loads(out)["token"] == token
    code, out, err = run(capsys, "create", "--id", "bob")
    assert code == 0 and token not in out + err
    code, out, _err = run(capsys, "create", "--id", "bob", "--show-token")
    assert token in out


def test_limit_error_is_one_line_with_hint_and_exit_1(
    capsys: pytest.CaptureFixture[str], manager: SessionManager
) -> None:
    run(capsys, "create", "--id", "a")
    run(capsys, "create", "--id", "b")
    code, out, err = run(capsys, "create", "--id", "c")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: Maximum number of sessions (2) reached")
    assert "hint:" in err


def test_errors_with_json_are_a_json_document_on_stdout(
    capsys: pytest.CaptureFixture[str], manager: SessionManager
) -> None:
    code, out, _err = run(capsys, "send", "--id", "ghost", "--json", "--", "version")
    assert code == 1
    data = json.loads(out)
    assert data["error"] == "SessionNotFoundError"
    assert data["message"].startswith("Error joining session")
    assert data["hint"]


def test_disabled_sessions_fail_with_the_classic_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSOCKET_ENABLED", "false")
    monkeypatch.setenv("WEBSOCKET_BACKEND", "local")
    mgr = SessionManager(load_settings(), FakeBackend())
    monkeypatch.setattr(SessionManager, "from_settings", classmethod(lambda cls, s=None: mgr))
    code, _out, err = run(capsys, "list")
    assert code == 1
    assert err.startswith("error: WebSocket sessions are disabled: WEBSOCKET_ENABLED is false")


def test_bad_settings_stop_with_the_variable_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSOCKET_MAX_SESSIONS", "0")
    code, _out, err = run(capsys, "list")
    assert code == 1
    assert "WEBSOCKET_MAX_SESSIONS" in err


def test_send_json_exits_with_the_commands_exit_code(
    capsys: pytest.CaptureFixture[str], manager: SessionManager, network: FakeNetwork
) -> None:
    run(capsys, "create", "--id", "w")
    network.results["info domain"] = CommandResult(
        exit_code=3, stdout="", stderr="nope\n", duration_ms=2
    )
    code, out, _err = run(capsys, "send", "--id", "w", "--json", "--", "info", "domain")
    assert code == 3
    assert json.loads(out) == {"exit_code": 3, "stdout": "", "stderr": "nope\n", "duration_ms": 2}


def test_list_close_and_reap_outputs(
    capsys: pytest.CaptureFixture[str], manager: SessionManager
) -> None:
    assert run(capsys, "list")[1] == "no sessions\n"
    run(capsys, "create", "--id", "one")
    code, out, _err = run(capsys, "list")
    assert code == 0 and out.splitlines()[0].split() == ["ID", "STATUS", "CREATED", "URL"]
    assert "one" in out.splitlines()[1]
    code, out, _err = run(capsys, "list", "--json")
    assert [s["session_id"] for s in json.loads(out)] == ["one"]
    assert "token" not in out
    code, out, _err = run(capsys, "close", "--id", "one", "--json")
    assert code == 0 and json.loads(out) == {"session_id": "one", "closed": True}
    code, _out, err = run(capsys, "close", "--id", "one")
    assert code == 1 and "no session 'one'" in err
    backend = manager.backend
    assert isinstance(backend, FakeBackend)
    run(capsys, "create", "--id", "two")
    backend.sessions["two"] = backend.sessions["two"].model_copy(
        update={"status": SessionStatus.FINISHED}
    )
    code, out, _err = run(capsys, "reap", "--dry-run")
    assert code == 0 and out == "would remove two: finished\n"
    code, out, _err = run(capsys, "reap", "--json")
    assert json.loads(out) == [
        {
            "session_id": "two",
            "reason": "finished",
            "reason_code": "finished",
            "removed": True,
            "idle_since": None,
        }
    ]


def test_test_session_reports_each_step_and_exits_by_the_verdict(
    capsys: pytest.CaptureFixture[str], manager: SessionManager, network: FakeNetwork
) -> None:
    run(capsys, "create", "--id", "t")
    code, out, _err = run(capsys, "test-session", "--id", "t", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [s["name"] for s in report["steps"]] == ["exists", "ready", "handshake", "command"]
    network.results["version"] = CommandResult(
        exit_code=2, stdout="", stderr="bad creds\n", duration_ms=1
    )
    code, out, _err = run(capsys, "test-session", "--id", "t")
    assert code == 1
    assert "FAIL command" in out and "FAILED at command" in out and "bad creds" in out
    code, out, _err = run(capsys, "test-session", "--id", "ghost", "--json")
    report = json.loads(out)
    assert code == 1 and report["first_failure"]["name"] == "exists"
    assert len(report["steps"]) == 1


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (255, 255), (300, 255), (-9, 137)])
def test_command_exit_codes_map_to_process_statuses(code: int, status: int) -> None:
    assert command_exit_status(code) == status


def test_progress_is_held_back_during_the_first_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quiet = ProgressPrinter(after_s=3600)
    quiet(ProgressEvent(session_id="s", phase="p", message="pulling image"))
    assert capsys.readouterr().err == ""
    loud = ProgressPrinter(after_s=0)
    loud(ProgressEvent(session_id="s", phase="p", message="pulling image"))
    assert capsys.readouterr().err == "... s: pulling image\n"


def test_an_os_error_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[object]:
        raise PermissionError(13, "Permission denied", "/state/sessions")

    monkeypatch.setattr(manager, "list_sessions", broken)
    code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert err == "error: Operating system error: [Errno 13] Permission denied: '/state/sessions'\n"


class _StreamingConnection:
    """Yields chunks, then records an exit; or raises Ctrl-C midway when asked."""

    def __init__(self, *, interrupt: bool = False) -> None:
        self.interrupt = interrupt
        self.cancelled = False
        self.last_exit: object | None = None

    def stream(self, argv: object) -> Iterator[OutputChunk]:
        yield OutputChunk("stdout", "out-1\n")
        if self.interrupt:
            raise KeyboardInterrupt
        yield OutputChunk("stderr", "err-1\n")
        self.last_exit = ExitMessage(id="c1", code=7, duration_ms=5)

    def cancel(self) -> None:
        self.cancelled = True


def test_send_streams_each_chunk_to_its_stream_and_returns_the_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = _StreamingConnection()
    assert stream_command(conn, ["info", "domain"]) == 7  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert (out, err) == ("out-1\n", "err-1\n")


def test_ctrl_c_during_send_cancels_the_command_and_returns_130(
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = _StreamingConnection(interrupt=True)
    assert stream_command(conn, "sleep 100") == 130  # type: ignore[arg-type]
    assert conn.cancelled
    assert "cancelled" in capsys.readouterr().err
