"""SessionManager on an in-memory backend and connector: the logic, without processes."""

from __future__ import annotations

import pytest

from session_runtime.errors import (
    BackendUnavailableError,
    CommandTimeoutError,
    InvalidNameError,
    InvalidSessionIdError,
    SessionConnectError,
    SessionJoinError,
    SessionLimitError,
    SessionNotFoundError,
    SessionsDisabledError,
    SessionStartError,
    SessionUnauthorizedError,
    SessionUnreachableError,
)
from session_runtime.manager import SessionManager, local_stack_settings
from session_runtime.models import CommandResult, ProgressEvent, SessionStatus
from session_runtime.settings import WebSocketSettings, load_settings
from tests.runtime.fakes import FakeBackend, FakeNetwork


@pytest.fixture
def settings(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> WebSocketSettings:
    for var in ("WEBSOCKET_PROXY_SERVICE_URL", "WEBSOCKET_SESSION_CONNECTION_TEMPLATE"):
        monkeypatch.delenv(var, raising=False)
    return load_settings(
        max_sessions=3,
        session_connection_template="ws://proxy.test:8080/ws/session/{{SESSION_ID}}/",
        start_timeout=5,
        connect_timeout=1,
    )


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def manager(
    settings: WebSocketSettings, backend: FakeBackend, network: FakeNetwork
) -> SessionManager:
    return SessionManager(settings, backend, connector=network)


def test_create_returns_urls_from_the_templates_and_a_ready_status(
    manager: SessionManager, network: FakeNetwork
) -> None:
    info = manager.create_session("alice")
    assert info.session_id == "alice"
    assert info.websocket_url == "ws://proxy.test:8080/ws/session/alice/"
    assert info.websocket_path == "/ws/session/alice/"
    assert info.status is SessionStatus.READY
    assert network.opened[0].url == info.websocket_url
    assert network.opened[0].pings == 1
    assert network.opened[0].closed


def test_create_generates_a_valid_id_and_a_long_random_token(
    manager: SessionManager, backend: FakeBackend
) -> None:
    first = manager.create_session()
    second = manager.create_session()
    assert first.session_id != second.session_id
    assert first.session_id.startswith("s-")
    token = first.token.get_secret_value()
    assert len(token) >= 43
    assert token != second.token.get_secret_value()
    assert token not in repr(first)


def test_create_uses_the_default_credentials_secret_unless_given(
    manager: SessionManager, backend: FakeBackend
) -> None:
    manager.create_session("a")
    manager.create_session("b", credentials_secret="team-b.creds")
    assert [r.credentials_secret for r in backend.requests] == ["gam-credentials", "team-b.creds"]
    assert backend.requests[0].max_sessions == 3


def test_create_for_an_existing_id_returns_that_session_and_its_token(
    manager: SessionManager,
) -> None:
    first = manager.create_session("same")
    again = manager.create_session("same")
    assert again.token.get_secret_value() == first.token.get_secret_value()
    assert again.created_at == first.created_at


def test_create_without_wait_skips_both_readiness_phases(
    manager: SessionManager, network: FakeNetwork
) -> None:
    info = manager.create_session("quick", wait=False)
    assert info.status is SessionStatus.STARTING
    assert network.opened == []


def test_the_limit_error_comes_from_the_backend_and_names_the_maximum(
    manager: SessionManager,
) -> None:
    for sid in ("a", "b", "c"):
        manager.create_session(sid)
    with pytest.raises(SessionLimitError, match=r"Maximum number of sessions \(3\) reached"):
        manager.create_session("d")


@pytest.mark.parametrize("bad", ["UPPER", "a.b", "-x", "x-", "a" * 64, "../etc", ""])
def test_create_refuses_invalid_ids_before_touching_the_backend(
    manager: SessionManager, backend: FakeBackend, bad: str
) -> None:
    with pytest.raises(InvalidSessionIdError, match="Invalid session id"):
        manager.create_session(bad)
    assert backend.requests == []


@pytest.mark.parametrize("bad", ["Bad_Secret", "a/b", "x" * 254, "-a"])
def test_create_refuses_invalid_credentials_secret_names(
    manager: SessionManager, backend: FakeBackend, bad: str
) -> None:
    with pytest.raises(InvalidNameError, match="Invalid credentials secret name"):
        manager.create_session("ok", credentials_secret=bad)
    assert backend.requests == []


def test_handshake_is_retried_while_the_proxy_cannot_reach_the_session(
    manager: SessionManager, network: FakeNetwork
) -> None:
    network.failures = [
        SessionUnreachableError(status=502, code="session_unavailable"),
        SessionConnectError(cause="connection refused"),
    ]
    events: list[ProgressEvent] = []
    info = manager.create_session("slow", progress=events.append)
    assert info.status is SessionStatus.READY
    assert [e.phase for e in events][-2:] == ["handshake", "ready"]


def test_handshake_that_never_succeeds_is_a_connect_error_and_the_session_is_removed(
    manager: SessionManager,
    network: FakeNetwork,
    backend: FakeBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("session_runtime.manager.HANDSHAKE_RETRY_WINDOW_S", 0.2)
    network.refuse = lambda url, token: SessionUnreachableError(
        status=502, code="session_unavailable", cause="upstream unreachable"
    )
    with pytest.raises(SessionConnectError, match=r"^Failed to connect to session") as caught:
        manager.create_session("never")
    assert "test-proxy" in (caught.value.hint or "")
    assert "never" not in backend.sessions
    assert backend.deleted == ["never"]


def test_a_refused_token_is_a_join_error_without_retrying(
    manager: SessionManager, network: FakeNetwork
) -> None:
    network.failures = [SessionUnauthorizedError("unauthorized", status=401)]
    with pytest.raises(SessionJoinError, match=r"^Error joining session") as caught:
        manager.create_session("x")
    assert "refused its own token" in (caught.value.cause or "")


def test_a_session_that_fails_to_start_is_removed_and_the_error_kept(
    manager: SessionManager, backend: FakeBackend
) -> None:
    backend.fail_ready.add("broken")
    with pytest.raises(SessionStartError, match="exited with status 3"):
        manager.create_session("broken")
    assert "broken" not in backend.sessions


def test_a_failing_existing_session_is_not_removed_by_create(
    manager: SessionManager, backend: FakeBackend
) -> None:
    manager.create_session("keep", wait=False)
    backend.fail_ready.add("keep")
    with pytest.raises(SessionStartError):
        manager.create_session("keep")
    assert "keep" in backend.sessions


def test_every_method_fails_first_with_the_disabled_error(
    backend: FakeBackend, network: FakeNetwork
) -> None:
    manager = SessionManager(load_settings(enabled=False), backend, connector=network)
    calls = [
        lambda: manager.create_session("a"),
        lambda: manager.connect("a"),
        lambda: manager.send_command("a", "version"),
        lambda: manager.close_session("a"),
        lambda: manager.get_session("a"),
        manager.list_sessions,
        manager.reap,
        lambda: manager.create_session("NOT VALID"),
    ]
    for call in calls:
        with pytest.raises(SessionsDisabledError, match=r"^WebSocket sessions are disabled"):
            call()
    assert backend.requests == []


def test_disabled_by_the_environment(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> None:
    monkeypatch.setenv("WEBSOCKET_ENABLED", "false")
    manager = SessionManager(load_settings(), backend)
    with pytest.raises(SessionsDisabledError) as caught:
        manager.create_session()
    assert caught.value.cause == "WEBSOCKET_ENABLED is false"


def test_connect_to_a_missing_session_is_a_not_found_join_error(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFoundError, match=r"^Error joining session") as caught:
        manager.connect("ghost")
    assert "ghost" in (caught.value.cause or "")


def test_send_command_runs_through_a_connection_it_closes(
    manager: SessionManager, network: FakeNetwork
) -> None:
    manager.create_session("w")
    network.results["info domain"] = CommandResult(
        exit_code=4, stdout="", stderr="denied\n", duration_ms=3
    )
    result = manager.send_command("w", "info domain")
    assert result.exit_code == 4
    assert network.opened[-1].token == manager.backend.get("w").token.get_secret_value()  # type: ignore[union-attr]
    assert network.opened[-1].closed


def test_get_list_close_and_reap(manager: SessionManager, backend: FakeBackend) -> None:
    manager.create_session("one")
    manager.create_session("two")
    assert manager.get_session("two").websocket_path == "/ws/session/two/"
    assert [s.session_id for s in manager.list_sessions()] == ["one", "two"]
    assert manager.close_session("one") is True
    assert manager.close_session("one") is False
    with pytest.raises(SessionNotFoundError):
        manager.get_session("one")
    backend.sessions["two"] = backend.sessions["two"].model_copy(
        update={"status": SessionStatus.FINISHED}
    )
    assert [r.removed for r in manager.reap(dry_run=True)] == [False]
    assert [(r.session_id, r.removed) for r in manager.reap()] == [("two", True)]
    assert manager.list_sessions() == []


def test_explicit_urls_are_kept_for_the_local_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_PROXY_SERVICE_URL", "http://127.0.0.9:1234")
    monkeypatch.setenv(
        "WEBSOCKET_SESSION_CONNECTION_TEMPLATE", "ws://127.0.0.9:1234/ws/session/{{SESSION_ID}}/"
    )
    settings = load_settings(backend="local")
    assert local_stack_settings(settings) is settings


def test_preflight_failures_stop_connect_before_the_backend_is_asked(
    settings: WebSocketSettings, backend: FakeBackend, network: FakeNetwork
) -> None:
    def down() -> None:
        raise BackendUnavailableError("The local stack is not running", hint="local up")

    manager = SessionManager(settings, backend, connector=network, preflight=down)
    with pytest.raises(BackendUnavailableError, match="local stack is not running"):
        manager.connect("default")
    assert network.opened == []


def test_a_ping_that_never_answers_is_a_connect_error(
    manager: SessionManager, network: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("session_runtime.manager.HANDSHAKE_RETRY_WINDOW_S", 0.2)
    network.refuse = lambda url, token: CommandTimeoutError("no pong within 1s")
    with pytest.raises(SessionConnectError, match="no pong"):
        manager.create_session("mute")
