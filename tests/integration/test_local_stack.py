"""The whole path on one machine: a client through nginx to an agent running real GAM."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack, dns
from session_runtime.backends.local.processes import is_alive
from session_runtime.client import SessionConnection
from session_runtime.errors import (
    BackendUnavailableError,
    SessionNotFoundError,
    SessionUnauthorizedError,
    SessionUnreachableError,
)
from session_runtime.ids import DEFAULT_SESSION_ID
from session_runtime.models import CreateRequest, SessionStatus
from tests.integration.conftest import SessionFactory
from tests.support.local_stack import LogCursor, raw_request


def _url(base: str, session_id: str) -> str:
    return base + naming.session_path(session_id)


def test_gam_version_runs_in_the_default_session_through_the_proxy(
    local_stack: LocalStack, backend: LocalBackend, proxy_ws_base: str, default_token: str
) -> None:
    cursor = LogCursor(local_stack)
    with SessionConnection.open(_url(proxy_ws_base, DEFAULT_SESSION_ID), default_token) as conn:
        assert conn.welcome.session_id == DEFAULT_SESSION_ID
        result = conn.run("version")
    assert result.exit_code == 0
    assert "GAM" in result.stdout
    default = backend.get(DEFAULT_SESSION_ID)
    assert default is not None
    (entry,) = cursor.access_entries()
    assert entry["status"] == "101"
    assert entry["upstream"] == default.agent_address
    # What nginx guarantees: it reached the address the resolver gives for the
    # session's name. Whether this request queried dnsmasq or used nginx's
    # cached answer (resolver valid=) is not observable, so it is not asserted.
    stack = local_stack.state.read_stack()
    assert stack is not None
    name = f"{DEFAULT_SESSION_ID}.{stack.session_domain}"
    answer = dns.query_a(("127.0.0.1", stack.dns_port), name)
    assert answer is not None and f"{answer}:{naming.AGENT_PORT}" == default.agent_address


def test_the_token_may_ride_in_the_subprotocol_through_the_proxy(
    proxy_ws_base: str, default_token: str
) -> None:
    url = _url(proxy_ws_base, DEFAULT_SESSION_ID)
    with SessionConnection.open(url, default_token, token_in_subprotocol=True) as conn:
        assert conn.ping() >= 0


def test_two_sessions_are_isolated_from_each_other(
    new_session: SessionFactory, proxy_ws_base: str
) -> None:
    first, second = new_session(), new_session()
    assert first.agent_address != second.agent_address
    with pytest.raises(SessionUnauthorizedError) as info:
        SessionConnection.open(
            _url(proxy_ws_base, first.session_id), second.token.get_secret_value()
        )
    assert info.value.status == 401
    assert second.token.get_secret_value() not in str(info.value)
    with SessionConnection.open(
        _url(proxy_ws_base, first.session_id), first.token.get_secret_value()
    ) as conn:
        assert conn.welcome.session_id == first.session_id


def test_an_unknown_session_gets_a_json_error_from_the_proxy(proxy_ws_base: str) -> None:
    with pytest.raises(SessionUnreachableError) as info:
        SessionConnection.open(_url(proxy_ws_base, "no-such-session"), "x" * 32)
    assert info.value.status == 502
    assert info.value.code == "session_unavailable"


def test_creating_an_existing_id_returns_the_running_session(
    new_session: SessionFactory, backend: LocalBackend
) -> None:
    session = new_session("same-id")
    record = backend.state.read_session("same-id")
    again = backend.create(
        CreateRequest(
            session_id="same-id",
            token=SecretStr("another-token"),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    assert again.token.get_secret_value() == session.token.get_secret_value()
    assert backend.state.read_session("same-id") == record


def test_tokens_are_kept_in_files_only_the_owner_can_read(
    new_session: SessionFactory, backend: LocalBackend
) -> None:
    session = new_session()
    path = backend.state.token_path(session.session_id)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (backend.state.root.stat().st_mode & 0o777) == 0o700
    stack_text = backend.state.stack_path.read_text()
    assert session.token.get_secret_value() not in stack_text


def test_a_closed_session_is_gone_from_the_proxy_and_its_process_stopped(
    new_session: SessionFactory, backend: LocalBackend, proxy_ws_base: str
) -> None:
    session = new_session()
    record = backend.state.read_session(session.session_id)
    assert record is not None
    assert backend.delete(session.session_id) is True
    assert backend.delete(session.session_id) is False
    assert not is_alive(record.process)
    assert backend.get(session.session_id) is None
    assert record.address not in backend.state.hosts_path.read_text()
    assert not backend.state.session_home(session.session_id).exists()  # GAM config gone too
    assert not backend.state.token_path(session.session_id).exists()
    with pytest.raises(SessionUnreachableError) as info:
        SessionConnection.open(
            _url(proxy_ws_base, session.session_id), session.token.get_secret_value()
        )
    assert info.value.code == "session_unavailable"


def test_waiting_for_a_missing_session_raises_not_found(backend: LocalBackend) -> None:
    with pytest.raises(SessionNotFoundError, match="no session 'absent'"):
        backend.wait_ready("absent", timeout=1)


def test_list_shows_the_default_session_ready(backend: LocalBackend) -> None:
    sessions = {s.session_id: s for s in backend.list()}
    assert sessions[DEFAULT_SESSION_ID].status is SessionStatus.READY


def test_status_reports_every_process_alive(local_stack: LocalStack) -> None:
    status = local_stack.status()
    assert status.running
    assert status.proxy_url == local_stack.proxy_url()
    names = {p.name: p.alive for p in status.processes}
    assert names["nginx"] and names["dnsmasq"] and names[f"session {DEFAULT_SESSION_ID}"]


def test_up_on_a_running_stack_changes_nothing(local_stack: LocalStack) -> None:
    before = local_stack.state.read_stack()
    local_stack.up()
    assert local_stack.state.read_stack() == before


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_nginx_accepts_the_config_the_stack_runs(local_stack: LocalStack) -> None:
    prefix = local_stack.state.nginx_dir
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx
    result = subprocess.run(
        [
            nginx,
            "-t",
            "-q",
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            "-e",
            str(local_stack.state.logs_dir / "nginx-test.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_an_idle_session_exits_and_is_reaped(local_stack: LocalStack) -> None:
    backend = LocalBackend(local_stack.state.root, idle_timeout=1)
    backend.create(
        CreateRequest(
            session_id="idle-one",
            token=SecretStr("idle-token"),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    try:
        backend.wait_ready("idle-one", timeout=30)
        deadline = time.monotonic() + 30
        while (s := backend.get("idle-one")) and s.status is not SessionStatus.FINISHED:
            assert time.monotonic() < deadline, "the idle agent never exited"
            time.sleep(0.2)
        reaped = backend.reap(
            idle_timeout=3600, max_lifetime=3600, now=datetime.now(UTC), dry_run=False
        )
        assert [(r.session_id, r.removed) for r in reaped] == [("idle-one", True)]
        assert reaped[0].reason.startswith("finished")
        assert backend.get("idle-one") is None
    finally:
        backend.delete("idle-one")


def test_reap_removes_sessions_past_their_lifetime_but_not_the_default(
    new_session: SessionFactory, backend: LocalBackend
) -> None:
    session = new_session()
    later = datetime.now(UTC) + timedelta(hours=10)
    dry = backend.reap(idle_timeout=10**9, max_lifetime=3600, now=later, dry_run=True)
    assert [(r.session_id, r.removed) for r in dry] == [(session.session_id, False)]
    assert dry[0].reason.startswith("expired")
    assert backend.get(session.session_id) is not None
    done = backend.reap(idle_timeout=10**9, max_lifetime=3600, now=later)
    assert [(r.session_id, r.removed) for r in done] == [(session.session_id, True)]
    assert backend.get(DEFAULT_SESSION_ID) is not None


def test_reap_removes_idle_sessions_by_the_agents_last_activity(
    new_session: SessionFactory, backend: LocalBackend
) -> None:
    session = new_session()
    later = datetime.now(UTC) + timedelta(seconds=120)
    reaped = backend.reap(idle_timeout=60, max_lifetime=10**9, now=later, dry_run=True)
    assert [(r.session_id, r.reason.split(":")[0]) for r in reaped] == [
        (session.session_id, "idle")
    ]


def test_creating_without_a_running_stack_names_the_fix(tmp_path: object) -> None:
    backend = LocalBackend(str(tmp_path))
    with pytest.raises(BackendUnavailableError, match="local stack is not running") as info:
        backend.create(
            CreateRequest(
                session_id="x",
                token=SecretStr("t"),
                credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
                max_sessions=5,
            )
        )
    assert "local up" in (info.value.hint or "")


def test_the_access_log_never_contains_the_query_string(
    local_stack: LocalStack, proxy_port: int
) -> None:
    cursor = LogCursor(local_stack)
    raw_request(proxy_port, "/nowhere?secret=hunter2")
    (entry,) = cursor.access_entries()
    assert entry["path"] == "/nowhere"
    assert "hunter2" not in json.dumps(entry)
