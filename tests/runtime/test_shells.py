"""One behavioural suite, run against both client shells through the real local stack and nginx.

Sessions run the fake GAM (``tests/support/fake_gam.py``) on the runtime tests'
stack, so commands can be long, loud or slow on purpose. Every case runs once
with the sync shell (websocket-client) and once with the asyncio shell
(websockets): same calls, same results, same typed errors.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend
from session_runtime.client import OutputChunk
from session_runtime.errors import (
    CommandRejectedError,
    CommandTimeoutError,
    ConnectionLostError,
    HandshakeRejectedError,
    SessionConnectError,
    SessionUnauthorizedError,
    SessionUnreachableError,
)
from session_runtime.ids import generate_session_id
from session_runtime.models import BackendSession, CreateRequest
from tests.agent.test_live_tty import needs_pty
from tests.runtime.conftest import StackHandle
from tests.runtime.shells import AsyncShell, Shell, SyncShell

SHELLS = ["sync", "async"]


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> Iterator[Shell]:
    made: SyncShell | AsyncShell = SyncShell() if request.param == "sync" else AsyncShell()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def session(fake_session: BackendSession) -> BackendSession:
    return fake_session


@pytest.fixture
def url(ws_base: str, session: BackendSession) -> str:
    return ws_base + naming.session_path(session.session_id)


@pytest.fixture
def token(session: BackendSession) -> str:
    return session.token.get_secret_value()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# --- run and stream -------------------------------------------------------------------
def test_run_returns_exit_code_and_both_streams(shell: Shell, url: str, token: str) -> None:
    conn = shell.open(url, token)
    try:
        assert conn.welcome.session_id in url
        result = conn.run("version")
        assert result.exit_code == 0 and "fake GAM" in result.stdout
        assert conn.run(["stderr", "to", "stderr"]).stderr == "to stderr\n"
        assert conn.run("exit 3").exit_code == 3
        assert conn.run("gam echo a 'b c'").stdout == '["a", "b c"]\n'
    finally:
        conn.close()


def test_stream_yields_every_byte_in_order_with_rising_seqs(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["spam", str(300_000)])
        chunks = handle.rest()
        assert sum(len(c.data) for c in chunks) == 300_000
        assert len(chunks) > 1
        assert handle.exit is not None and handle.exit.code == 0
        seqs = [c.seq for c in chunks if c.seq is not None]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert conn.last_exit == handle.exit
    finally:
        conn.close()


def test_output_arriving_during_a_ping_is_kept_for_the_command(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["spam", str(200_000)])
        assert conn.ping() >= 0  # reads (and holds) the command's frames until its pong
        assert sum(len(c.data) for c in handle.rest()) == 200_000
    finally:
        conn.close()


# --- cancel, leaving early ---------------------------------------------------------------
def test_cancel_stops_the_command_and_its_exit_still_arrives(
    shell: Shell, url: str, token: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    conn = shell.open(url, token)
    try:
        handle = conn.start(["pidfile", str(pidfile), "60"])
        assert handle.next_chunk().data == "ready\n"
        handle.cancel()
        handle.rest()
        assert handle.exit is not None and handle.exit.cancelled
        assert _gone(int(pidfile.read_text()))
    finally:
        conn.close()


def test_leaving_the_command_block_early_cancels_and_the_connection_stays_usable(
    shell: Shell, url: str, token: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    conn = shell.open(url, token)
    try:
        handle = conn.start(["pidfile", str(pidfile), "60"])
        assert handle.next_chunk().data == "ready\n"
        handle.leave()
        assert _gone(int(pidfile.read_text()))
        assert conn.run("echo after").stdout == '["after"]\n'  # not busy: settled first
    finally:
        conn.close()


def test_closing_a_stream_early_cancels_its_command(
    shell: Shell, url: str, token: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    conn = shell.open(url, token)
    try:
        taken = conn.stream_some(["pidfile", str(pidfile), "60"], 1)
        assert [c.data for c in taken] == ["ready\n"]
        assert _gone(int(pidfile.read_text()))
        assert conn.run("echo next").exit_code == 0
    finally:
        conn.close()


# --- timeouts ----------------------------------------------------------------------------
def test_a_command_timeout_cancels_and_the_connection_is_reusable(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        with pytest.raises(CommandTimeoutError, match=r"did not finish within 0\.5s"):
            conn.run("sleep 30", timeout=0.5)
        assert conn.run("echo after").exit_code == 0
    finally:
        conn.close()


def test_a_connect_timeout_too_short_for_the_handshake_is_a_connect_error(
    shell: Shell, url: str, token: str
) -> None:
    with pytest.raises(SessionConnectError) as info:
        shell.open(url.replace("127.0.0.1", "10.255.255.1"), token, timeout=0.3)
    assert str(info.value).startswith("Failed to connect to session")
    assert token not in str(info.value)


# --- handshake refusals ----------------------------------------------------------------------
def test_a_wrong_token_is_refused_with_401(shell: Shell, url: str, token: str) -> None:
    with pytest.raises(SessionUnauthorizedError) as info:
        shell.open(url, token + "-wrong")
    assert info.value.status == 401
    assert str(info.value).startswith("Error joining session")
    assert token not in str(info.value)


def test_a_path_outside_the_session_rule_gets_404_from_nginx(
    shell: Shell, local_stack: StackHandle, token: str
) -> None:
    base = "ws://" + local_stack.proxy_url.split("://", 1)[1].rstrip("/")
    with pytest.raises(HandshakeRejectedError) as info:
        shell.open(base + "/ws/session/NOT_A_LABEL/", token)
    assert not isinstance(info.value, SessionUnauthorizedError)
    assert info.value.status == 404


def test_a_session_nobody_runs_gets_502_from_nginx(
    shell: Shell, local_stack: StackHandle, token: str
) -> None:
    base = "ws://" + local_stack.proxy_url.split("://", 1)[1].rstrip("/")
    with pytest.raises(SessionUnreachableError) as info:
        shell.open(base + naming.session_path("nobody-runs-this"), token)
    assert info.value.status == 502 and info.value.code == "session_unavailable"
    assert str(info.value).startswith("Failed to connect to session")


def test_the_token_in_a_subprotocol_is_accepted_as_from_a_browser(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token, token_in_subprotocol=True)
    try:
        assert conn.ping() >= 0
    finally:
        conn.close()


# --- closed mid-command -----------------------------------------------------------------------
def test_an_agent_killed_mid_command_is_a_lost_connection(
    shell: Shell, fake_backend: LocalBackend, local_stack: StackHandle, tmp_path: Path
) -> None:
    sid = f"shells-gone-{generate_session_id()[:6]}"
    fake_backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr("tok-gone-" + generate_session_id()),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    session = fake_backend.wait_ready(sid, timeout=30)
    base = "ws://" + local_stack.proxy_url.split("://", 1)[1].rstrip("/")
    conn = shell.open(base + naming.session_path(sid), session.token.get_secret_value())
    pidfile = tmp_path / "pid"
    try:
        handle = conn.start(["pidfile", str(pidfile), "60"], timeout=60)
        assert handle.next_chunk().data == "ready\n"
        record = fake_backend.state.read_session(sid)
        assert record is not None
        os.kill(record.process.pid, signal.SIGKILL)  # no exit, no close frame: the socket drops
        with pytest.raises(ConnectionLostError) as info:
            handle.rest()
        assert str(info.value).startswith("Failed to connect to session")
    finally:
        conn.close()
        fake_backend.delete(sid)  # kills what the dead agent left running
    assert _gone(int(pidfile.read_text()))


# --- live sessions (v1.1 agents): resume, attach, stdin -------------------------------------
TICKS = 30


def _ticks(chunks: list[OutputChunk]) -> str:
    return "".join(c.data for c in chunks)


def test_a_dropped_connection_is_resumed_and_the_output_is_whole(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        assert conn.welcome.revision == "1.1"
        handle = conn.start(["ticks", str(TICKS), "0.05"], timeout=60)
        first = handle.next_chunk()
        conn.sever()
        rest = handle.rest()
        expected = "".join(f"tick {i}\n" for i in range(1, TICKS + 1))
        assert _ticks([first, *rest]) == expected  # nothing twice, nothing missing
        seqs = [c.seq for c in [first, *rest]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert handle.exit is not None and handle.exit.code == 0
        assert handle.gaps == []
        assert conn.run("echo after").exit_code == 0  # the new connection is the connection now
    finally:
        conn.close()


def test_twenty_drops_during_one_command_lose_nothing(shell: Shell, url: str, token: str) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["ticks", "40", "0.05"], timeout=120)
        chunks = []
        for _ in range(20):
            chunks.append(handle.next_chunk())
            conn.sever()
        chunks += handle.rest()
        assert _ticks(chunks) == "".join(f"tick {i}\n" for i in range(1, 41))
        assert handle.exit is not None and handle.exit.code == 0
    finally:
        conn.close()


def test_another_connection_attaches_and_sees_all_the_output(
    shell: Shell, url: str, token: str
) -> None:
    owner = shell.open(url, token)
    follower = shell.open(url, token)
    try:
        handle = owner.start(["ticks", "10", "0.05"], timeout=60)
        handle.next_chunk()
        attached = follower.attach(handle.id, after_seq=0)
        seen = attached.rest()
        assert _ticks(seen) == "".join(f"tick {i}\n" for i in range(1, 11))
        assert attached.exit is not None and attached.exit.code == 0
        assert attached.started is not None and attached.started.argv == ["ticks", "10", "0.05"]
        handle.rest()
    finally:
        owner.close()
        follower.close()


def test_attaching_to_an_unknown_command_is_a_bad_request(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        with pytest.raises(CommandRejectedError) as info:
            conn.attach("no-such-command").rest()
        assert info.value.code == "bad_request"
        assert conn.run("echo fine").exit_code == 0
    finally:
        conn.close()


def test_stdin_feeds_a_batch_and_eof_ends_it(shell: Shell, url: str, token: str) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["batch", "-"], stdin=True, timeout=60)
        handle.write("echo one\n")
        handle.write("echo two\n")
        handle.eof()
        with pytest.raises(CommandRejectedError, match="already closed"):
            handle.write("echo three\n")
        assert _ticks(handle.rest()) == '["one"]\n["two"]\n'
        assert handle.exit is not None and handle.exit.code == 0
    finally:
        conn.close()


def test_stdin_to_a_command_started_without_it_is_refused_before_sending(
    shell: Shell, url: str, token: str
) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["echo", "x"])
        with pytest.raises(CommandRejectedError, match="reads stdin"):
            handle.write("nope")
        with pytest.raises(CommandRejectedError, match="terminal"):
            handle.resize(80, 24)
        handle.rest()
    finally:
        conn.close()


@needs_pty
def test_a_tty_command_starts_with_the_requested_size(shell: Shell, url: str, token: str) -> None:
    conn = shell.open(url, token)
    try:
        handle = conn.start(["cat"], tty=(100, 30), timeout=60)
        handle.resize(120, 40)
        handle.write("hello\n")
        handle.eof()
        out = _ticks(handle.rest())
        assert "hello" in out
        assert handle.started is not None and handle.started.tty is not None
        assert (handle.started.tty.cols, handle.started.tty.rows) == (100, 30)
    finally:
        conn.close()
