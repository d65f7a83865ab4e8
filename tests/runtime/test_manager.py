"""SessionManager on a real backend (parametrised in conftest.py): the whole path."""

from __future__ import annotations

import threading

import pytest

from session_runtime.backends.local import LocalBackend
from session_runtime.backends.local.processes import is_alive, port_is_free
from session_runtime.backends.local.state import SessionRecord
from session_runtime.errors import (
    SessionLimitError,
    SessionNotFoundError,
    SessionsDisabledError,
    SessionUnauthorizedError,
)
from session_runtime.manager import SessionManager
from session_runtime.models import SessionStatus
from tests.runtime.conftest import ManagerFactory


def test_a_new_session_runs_gam_version_through_the_proxy(manager: SessionManager) -> None:
    info = manager.create_session("mgr-version")
    assert info.status is SessionStatus.READY
    assert info.websocket_url == manager.settings.session_url("mgr-version")
    result = manager.send_command(info.session_id, "version")
    assert result.exit_code == 0, result.stderr
    assert "GAM" in result.stdout


def test_create_twice_returns_the_same_session_and_token(manager: SessionManager) -> None:
    first = manager.create_session("mgr-twice")
    again = manager.create_session("mgr-twice")
    assert again.token.get_secret_value() == first.token.get_secret_value()
    assert [s.session_id for s in manager.list_sessions()].count("mgr-twice") == 1


def test_a_generated_session_is_listed_until_closed(manager: SessionManager) -> None:
    info = manager.create_session()
    assert info.session_id in {s.session_id for s in manager.list_sessions()}
    assert manager.get_session(info.session_id).websocket_path == info.websocket_path
    assert manager.close_session(info.session_id) is True
    assert manager.close_session(info.session_id) is False
    with pytest.raises(SessionNotFoundError):
        manager.get_session(info.session_id)
    with pytest.raises(SessionNotFoundError, match=r"^Error joining session"):
        manager.send_command(info.session_id, "version")


def test_one_sessions_token_is_refused_by_another(manager: SessionManager) -> None:
    alice = manager.create_session("mgr-alice")
    bob = manager.create_session("mgr-bob")
    with pytest.raises(SessionUnauthorizedError):
        manager.connector(bob.websocket_url, alice.token.get_secret_value(), 5.0)


def test_a_connection_streams_a_commands_output(manager: SessionManager) -> None:
    manager.create_session("mgr-stream")
    with manager.connect("mgr-stream") as conn:
        chunks = list(conn.stream(["version"]))
        assert conn.last_exit is not None and conn.last_exit.code == 0
    assert "".join(c.data for c in chunks if c.stream == "stdout")


def test_disabled_settings_refuse_before_the_backend_is_touched(
    manager: SessionManager,
) -> None:
    disabled = SessionManager(
        manager.settings.model_copy(update={"enabled": False}), manager.backend
    )
    with pytest.raises(SessionsDisabledError, match=r"^WebSocket sessions are disabled"):
        disabled.create_session("mgr-disabled")
    assert manager.backend.get("mgr-disabled") is None


def test_twenty_concurrent_creates_with_max_five_give_five_sessions_and_fifteen_limit_errors(
    manager_factory: ManagerFactory,
) -> None:
    manager = manager_factory(max_sessions=5)
    ids = [f"mgr-burst-{n}" for n in range(20)]
    created: list[str] = []
    limited: list[SessionLimitError] = []
    others: list[BaseException] = []
    lock = threading.Lock()

    def create(sid: str) -> None:
        try:
            info = manager.create_session(sid)
        except SessionLimitError as exc:
            with lock:
                limited.append(exc)
        except BaseException as exc:
            with lock:
                others.append(exc)
        else:
            with lock:
                created.append(info.session_id)

    threads = [threading.Thread(target=create, args=(sid,)) for sid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert others == []
    assert len(created) == 5
    assert len(limited) == 15
    assert all("Maximum number of sessions (5) reached" in str(e) for e in limited)
    alive = {s.session_id for s in manager.list_sessions()} & set(ids)
    assert alive == set(created)
    agents = _local_agents(manager, created)
    for sid in created:
        assert manager.close_session(sid)
    assert {s.session_id for s in manager.list_sessions()} & set(ids) == set()
    assert [r.process.pid for r in agents if is_alive(r.process)] == []
    assert [(r.address, r.port) for r in agents if not port_is_free(r.address, r.port)] == []


def _local_agents(manager: SessionManager, ids: list[str]) -> list[SessionRecord]:
    """The agents' records (process, address, port) where the backend runs local processes."""
    if not isinstance(manager.backend, LocalBackend):
        return []
    records = [manager.backend.state.read_session(sid) for sid in ids]
    return [r for r in records if r is not None]
