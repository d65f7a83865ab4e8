"""``--json-lines`` as a Node server would read it: the real CLI as a subprocess, line by line.

Every stdout line must be one JSON object of a documented type; the exit status
must tell a runtime failure from GAM's own non-zero exit; 50 MB of output must
stream through the CLI with its memory bounded (the peak is printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from session_runtime.cli.jsonlines import (
    EVENT_TYPES,
    EXIT_COMMAND_FAILED,
    EXIT_COMMAND_TIMEOUT,
    EXIT_STATUSES,
)
from session_runtime.models import BackendSession
from tests.runtime.conftest import MakeSession, StackHandle
from tests.support.memory import PeakRss

_CLI_TIMEOUT_S = 300
BIG_BYTES = 50 * 1024 * 1024  # 52428800
#: Far below what holding 50 MB of output (as str, then as JSON) would take.
CLI_RSS_BOUND_BYTES = 150 * 1024 * 1024


def _cli_argv() -> list[str]:
    return [sys.executable, "-m", "session_runtime"]


@pytest.fixture(scope="module")
def cli_env(local_stack: StackHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env["WEBSOCKET_BACKEND"] = "local"
    env["WEBSOCKET_LOCAL_STATE_DIR"] = str(local_stack.state_dir)
    return env


def _run(
    env: dict[str, str], tmp_path: Path, *args: str, extra: dict[str, str] | None = None
) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run(
        [*_cli_argv(), *args],
        env={**env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=_CLI_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    return proc.returncode, _lines(proc.stdout), proc.stderr


def _close(env: dict[str, str], tmp_path: Path, session_id: str) -> None:
    subprocess.run(
        [*_cli_argv(), "close", "--id", session_id],
        env=env,
        capture_output=True,
        timeout=_CLI_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )


def _lines(stdout: str) -> list[dict[str, object]]:
    """Parse stdout strictly: each line one JSON object with a documented type."""
    events = []
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line on stdout: {line!r}")
        assert isinstance(event, dict), line
        assert event["type"] in EVENT_TYPES, line
        events.append(event)
    return events


def test_the_exit_statuses_are_distinct_and_documented() -> None:
    assert len(set(EXIT_STATUSES)) == len(EXIT_STATUSES)
    cli_doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for status in EXIT_STATUSES:
        assert f"| {status} |" in cli_doc, f"exit status {status} missing from docs/cli.md"
    for kind in EVENT_TYPES:
        assert f"`{kind}`" in cli_doc, f"event type {kind} missing from docs/cli.md"


def test_create_prints_progress_then_ready_and_the_token_only_when_asked(
    cli_env: dict[str, str], tmp_path: Path, local_stack: StackHandle
) -> None:
    status, events, stderr = _run(cli_env, tmp_path, "create", "--id", "jl-create", "--json-lines")
    try:
        assert status == 0, stderr
        assert events[-1]["type"] == "ready"
        assert {e["type"] for e in events[:-1]} <= {"progress"}
        assert events[-1]["session_id"] == "jl-create" and events[-1]["status"] == "ready"
        assert "token" not in events[-1]
        assert all(e["session_id"] == "jl-create" for e in events if e["type"] == "progress")
        _, again, _ = _run(
            cli_env, tmp_path, "create", "--id", "jl-create", "--json-lines", "--show-token"
        )
        assert isinstance(again[-1]["token"], str) and len(again[-1]["token"]) >= 32
    finally:
        _close(cli_env, tmp_path, "jl-create")


def test_create_without_waiting_is_accepted(cli_env: dict[str, str], tmp_path: Path) -> None:
    status, events, stderr = _run(
        cli_env, tmp_path, "create", "--id", "jl-nowait", "--json-lines", "--no-wait"
    )
    try:
        assert status == 0, stderr
        assert events[-1]["type"] == "accepted"
    finally:
        _close(cli_env, tmp_path, "jl-nowait")


def test_a_create_that_fails_is_one_error_line_and_status_1(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    status, events, _ = _run(
        cli_env, tmp_path, "create", "--json-lines", extra={"WEBSOCKET_ENABLED": "false"}
    )
    assert status == 1
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"] == "SessionsDisabledError"
    assert str(events[0]["message"]).startswith("WebSocket sessions are disabled")


def test_send_prints_started_output_and_exit_with_seqs(
    cli_env: dict[str, str], tmp_path: Path, fake_session: BackendSession
) -> None:
    sid = fake_session.session_id
    status, events, stderr = _run(
        cli_env, tmp_path, "send", "--id", sid, "--json-lines", "--", "echo", "a b"
    )
    assert status == 0, stderr
    started, *outputs, exit_ = events
    assert (started["type"], exit_["type"]) == ("started", "exit")
    assert started["argv"] == ["echo", "a b"]
    # How the agent's reads cut the output into lines is not part of the contract
    # (an unbuffered print is two writes); the bytes, their order and the seqs are.
    assert outputs and all(set(o) == {"type", "id", "stream", "data", "seq"} for o in outputs)
    assert {(o["type"], o["id"], o["stream"]) for o in outputs} == {
        ("output", started["id"], "stdout")
    }
    assert "".join(str(o["data"]) for o in outputs) == '["a b"]\n'
    assert [o["seq"] for o in outputs] == list(range(1, len(outputs) + 1))
    assert exit_["code"] == 0 and exit_["seq"] == len(outputs) + 1
    assert fake_session.token.get_secret_value() not in json.dumps(events)


def test_gams_own_non_zero_exit_is_status_3_with_its_code_in_the_exit_line(
    cli_env: dict[str, str], tmp_path: Path, fake_session: BackendSession
) -> None:
    status, events, _ = _run(
        cli_env,
        tmp_path,
        "send",
        "--id",
        fake_session.session_id,
        "--json-lines",
        "--",
        "exit",
        "7",
    )
    assert status == EXIT_COMMAND_FAILED
    assert events[-1]["type"] == "exit" and events[-1]["code"] == 7


def test_an_unknown_session_is_a_runtime_failure_not_a_gam_exit(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    status, events, _ = _run(
        cli_env, tmp_path, "send", "--id", "jl-nobody", "--json-lines", "--", "version"
    )
    assert status == 1
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"] == "SessionNotFoundError"
    assert str(events[0]["message"]).startswith("Error joining session")


def test_a_command_timeout_is_status_4(
    cli_env: dict[str, str], tmp_path: Path, fake_session: BackendSession
) -> None:
    status, events, _ = _run(
        cli_env,
        tmp_path,
        "send",
        "--id",
        fake_session.session_id,
        "--json-lines",
        "--",
        "sleep",
        "30",
        extra={"WEBSOCKET_COMMAND_TIMEOUT": "1"},
    )
    assert status == EXIT_COMMAND_TIMEOUT
    assert events[-1]["type"] == "error" and events[-1]["error"] == "CommandTimeoutError"


def test_json_and_json_lines_together_are_a_usage_error_with_nothing_on_stdout(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [*_cli_argv(), "send", "--id", "x", "--json", "--json-lines", "--", "version"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=_CLI_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""


def test_50_mb_of_output_streams_line_by_line_with_bounded_cli_memory(
    cli_env: dict[str, str], tmp_path: Path, make_fake_session: MakeSession
) -> None:
    session = make_fake_session("jl-big")
    proc = subprocess.Popen(
        [
            *_cli_argv(),
            "send",
            "--id",
            session.session_id,
            "--json-lines",
            "--",
            "spam",
            "52428800",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    received = 0
    kinds: dict[str, int] = {}
    last_seq = 0
    with PeakRss(proc.pid) as rss:
        for raw in proc.stdout:  # as a Node readline would: one line at a time
            event = json.loads(raw)
            kinds[event["type"]] = kinds.get(event["type"], 0) + 1
            if event["type"] == "output":
                received += len(event["data"])
                assert event["seq"] == last_seq + 1
                last_seq = event["seq"]
        status = proc.wait(_CLI_TIMEOUT_S)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    print(f"\n50 MB via --json-lines: CLI peak RSS {rss.peak / 2**20:.1f} MiB, {kinds}")
    assert status == 0, stderr
    assert received == BIG_BYTES
    assert kinds["started"] == 1 and kinds["exit"] == 1 and "error" not in kinds
    assert rss.peak < CLI_RSS_BOUND_BYTES
