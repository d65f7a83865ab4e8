"""Start-up refusals, the initial command, credentials, idle exit and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
import websocket

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.errors import ConnectionLostError
from tests.agent.conftest import TOKEN
from tests.support.agents import running_agent, start_agent


def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_agent_refuses_to_start_without_a_token(tmp_path: Path, fake_gam: str) -> None:
    agent = start_agent("no-token", "", tmp_path=tmp_path, gam_bin=fake_gam, wait=False)
    try:
        assert agent.wait_exit() == 2
    finally:
        agent.stop()
    log = agent.log_path.read_text()
    assert "The agent refuses to start without a session token" in log
    assert agent.events("config_error")


def test_agent_refuses_an_invalid_session_id(tmp_path: Path, fake_gam: str) -> None:
    agent = start_agent(
        "x",
        TOKEN,
        tmp_path=tmp_path,
        gam_bin=fake_gam,
        wait=False,
        extra_env={naming.ENV_SESSION_ID: "Bad.Id"},
    )
    try:
        assert agent.wait_exit() == 2
    finally:
        agent.stop()
    assert "SESSION_ID is invalid" in agent.log_path.read_text()


def test_token_is_read_from_the_token_file_and_never_logged(tmp_path: Path, fake_gam: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-abc123\n")
    with (
        running_agent(
            "from-file",
            "",
            tmp_path=tmp_path,
            gam_bin=fake_gam,
            extra_env={naming.ENV_SESSION_TOKEN_FILE: str(token_file)},
        ) as agent,
        SessionConnection.open(agent.url, "file-token-abc123") as conn,
    ):
        assert conn.run("echo hi").exit_code == 0
    assert "file-token-abc123" not in agent.log_path.read_text()


def test_initial_command_is_replayed_to_each_client(tmp_path: Path, fake_gam: str) -> None:
    env = {naming.ENV_SESSION_COMMAND: "gam echo first 'command'"}
    with running_agent(
        "initial", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
    ) as agent:
        _wait_for(lambda: agent.events("command_finished"))
        for _ in range(2):
            with SessionConnection.open(agent.url, TOKEN) as conn:
                assert conn.welcome.initial_command is True
                conn.ping()
                assert conn.initial is not None
                assert conn.initial.argv == ["echo", "first", "command"]
                assert json.loads(conn.initial.stdout) == ["first", "command"]
                assert conn.initial.exit is not None and conn.initial.exit.code == 0
                assert conn.run("echo next").exit_code == 0


def test_initial_command_replay_is_marked_initial_on_the_wire(
    tmp_path: Path, fake_gam: str
) -> None:
    env = {naming.ENV_SESSION_COMMAND: "exit 4"}
    with running_agent(
        "initial2", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
    ) as agent:
        _wait_for(lambda: agent.events("command_finished"))
        ws = websocket.create_connection(
            agent.url, header=[f"Authorization: Bearer {TOKEN}"], timeout=5
        )
        try:
            frames = [json.loads(ws.recv()) for _ in range(3)]
        finally:
            ws.close()
    assert [f["type"] for f in frames] == ["welcome", "started", "exit"]
    assert frames[1]["initial"] is True and frames[1]["id"] == "initial"
    assert frames[2]["initial"] is True and frames[2]["code"] == 4


def test_credentials_are_copied_into_gamcfgdir_with_mode_0600(
    tmp_path: Path, fake_gam: str
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "oauth2service.json").write_text('{"type": "service_account"}')
    (creds / "oauth2.txt").write_text("{}")
    (creds / "unrelated.txt").write_text("not copied")
    for path in creds.iterdir():
        path.chmod(0o444)
    env = {naming.ENV_CREDENTIALS_DIR: str(creds)}
    with running_agent("creds", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env) as agent:
        assert agent.health()["credentials_found"] is True
        cfg = agent.gam_config_dir
        for name in ("oauth2service.json", "oauth2.txt"):
            assert stat.S_IMODE((cfg / name).stat().st_mode) == 0o600
        assert (cfg / "oauth2service.json").read_text() == '{"type": "service_account"}'
        assert not (cfg / "unrelated.txt").exists()
    assert "service_account" not in agent.log_path.read_text()


def test_idle_agent_exits_zero(tmp_path: Path, fake_gam: str) -> None:
    env = {naming.ENV_IDLE_TIMEOUT: "1"}
    agent = start_agent("idle", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env)
    try:
        assert agent.wait_exit(timeout=20) == 0
    finally:
        agent.stop()
    assert agent.events("idle_timeout")
    assert agent.events("stopped")[0]["reason"] == "idle"


def test_running_command_keeps_an_idle_agent_alive(tmp_path: Path, fake_gam: str) -> None:
    env = {naming.ENV_IDLE_TIMEOUT: "1"}
    with running_agent(
        "busy-idle", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
    ) as agent:
        with SessionConnection.open(agent.url, TOKEN) as conn:
            # Longer than the idle timeout: it must run to its end, not be cut off.
            assert conn.run("sleep 2.5").exit_code == 0
        assert agent.wait_exit(timeout=20) == 0
    finished = agent.events("command_finished")[-1]
    idle = agent.events("idle_timeout")[0]
    assert finished["duration_ms"] >= 2500  # type: ignore[operator]
    assert idle["ts"] >= finished["ts"]  # type: ignore[operator]


def test_command_timeout_stops_the_command(tmp_path: Path, fake_gam: str) -> None:
    from session_runtime.errors import CommandTimeoutError

    env = {naming.ENV_COMMAND_TIMEOUT: "0.5"}
    with (
        running_agent(
            "cmd-timeout", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
        ) as agent,
        SessionConnection.open(agent.url, TOKEN) as conn,
    ):
        with pytest.raises(CommandTimeoutError, match="session's command timeout"):
            conn.run("sleep 30")
        assert conn.last_exit is not None and conn.last_exit.timed_out is True


def _ping_until_closed(conn: SessionConnection, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        conn.ping()
        time.sleep(0.05)


def test_sigterm_mid_command_kills_it_closes_clients_with_1001_and_exits_zero(
    tmp_path: Path, fake_gam: str
) -> None:
    pidfile = tmp_path / "pid"
    agent = start_agent("sigterm", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam)
    try:
        conn = SessionConnection.open(agent.url, TOKEN)
        chunks = conn.stream(["pidfile", str(pidfile), "60"])
        assert next(chunks).data.startswith("ready")
        pid = int(pidfile.read_text())
        agent.process.send_signal(signal.SIGTERM)
        list(chunks)  # the command is cancelled first, so its exit still arrives
        assert conn.last_exit is not None and conn.last_exit.cancelled is True
        # A ping sent while the agent is shutting down may still be answered;
        # the close with 1001 must follow within a few seconds.
        with pytest.raises(ConnectionLostError) as info:
            _ping_until_closed(conn, within=10.0)
        conn.close()
        assert "code 1001" in str(info.value)
        assert agent.wait_exit() == 0
    finally:
        agent.stop()
    _wait_for(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        )
    )
    assert agent.events("stopped")[0]["reason"] == "signal"


def test_connection_limit_from_the_environment_answers_429(tmp_path: Path, fake_gam: str) -> None:
    from session_runtime.errors import HandshakeRejectedError

    env = {naming.ENV_MAX_CONNECTIONS: "3"}
    with running_agent("limit", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env) as agent:
        conns = [SessionConnection.open(agent.url, TOKEN) for _ in range(3)]
        try:
            with pytest.raises(HandshakeRejectedError) as info:
                SessionConnection.open(agent.url, TOKEN)
            assert info.value.status == 429
            assert info.value.code == "too_many_connections"
        finally:
            for conn in conns:
                conn.close()
    assert os.path.exists(agent.log_path)


def test_a_client_joining_while_the_initial_command_runs_gets_its_live_output(
    tmp_path: Path, fake_gam: str
) -> None:
    env = {naming.ENV_SESSION_COMMAND: "sleep 1.5"}
    with (
        running_agent(
            "initial3", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
        ) as agent,
        SessionConnection.open(agent.url, TOKEN) as conn,
    ):
        assert conn.welcome.busy is True
        deadline = time.monotonic() + 15
        while (conn.initial is None or conn.initial.exit is None) and time.monotonic() < deadline:
            conn.ping()
            time.sleep(0.1)
        assert conn.initial is not None and conn.initial.exit is not None
        assert conn.initial.stdout == "sleeping\n"
        assert conn.initial.exit.code == 0
        assert conn.run("echo after").exit_code == 0


def test_a_command_sent_while_the_initial_command_runs_waits_for_it(
    tmp_path: Path, fake_gam: str
) -> None:
    env = {naming.ENV_SESSION_COMMAND: "sleep 1.5"}
    with (
        running_agent(
            "initial4", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
        ) as agent,
        SessionConnection.open(agent.url, TOKEN) as conn,
    ):
        assert conn.welcome.busy is True
        result = conn.run(["echo", "after"])
        assert result.exit_code == 0
        assert json.loads(result.stdout) == ["after"]
        assert conn.initial is not None and conn.initial.exit is not None
        assert conn.initial.stdout == "sleeping\n"


def test_waiting_for_the_initial_command_is_bounded_by_the_timeout(
    tmp_path: Path, fake_gam: str
) -> None:
    from session_runtime.errors import CommandTimeoutError

    env = {naming.ENV_SESSION_COMMAND: "sleep 30"}
    with (
        running_agent(
            "initial5", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam, extra_env=env
        ) as agent,
        SessionConnection.open(agent.url, TOKEN) as conn,
    ):
        with pytest.raises(CommandTimeoutError, match="initial command is still running"):
            conn.run("echo never", timeout=0.5)
        assert conn.ping() > 0
    # The command that gave up waiting was never sent: only the initial one started.
    assert [e["initial"] for e in agent.events("command_started")] == [True]
