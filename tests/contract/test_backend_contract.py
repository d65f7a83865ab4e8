"""The SessionBackend contract (see its docstring), pinned on every backend alike."""

from __future__ import annotations

import pytest

from session_runtime.errors import SessionLimitError, SessionStartError
from session_runtime.models import SessionStatus
from tests.contract.conftest import Driver, create_request

ALIVE = {SessionStatus.PENDING, SessionStatus.STARTING, SessionStatus.READY}
DEAD = {SessionStatus.FINISHED, SessionStatus.FAILED}
WAIT_S = 20.0


def _ready(driver: Driver, session_id: str) -> str:
    """Create a session, wait until it is ready, and return its token."""
    created = driver.backend.create(create_request(session_id))
    assert created.created is True
    ready = driver.backend.wait_ready(session_id, WAIT_S)
    assert ready.status is SessionStatus.READY
    return ready.token.get_secret_value()


def _kill(driver: Driver, how: str, session_id: str) -> None:
    {"finished": driver.finish, "failed": driver.fail}[how](session_id)
    seen = driver.backend.get(session_id)
    assert seen is not None and seen.status.value == how


def test_create_of_an_absent_id_starts_it_and_every_view_agrees(driver: Driver) -> None:
    created = driver.backend.create(create_request("alpha"))
    assert created.created is True and created.status in ALIVE
    assert created.token.get_secret_value()
    got = driver.backend.get("alpha")
    assert got is not None and got.token == created.token
    assert "alpha" in [s.session_id for s in driver.backend.list()]


def test_create_of_a_live_id_returns_it_unchanged(driver: Driver) -> None:
    token = _ready(driver, "alpha")
    again = driver.backend.create(create_request("alpha"))
    assert again.created is False
    assert again.token.get_secret_value() == token
    assert again.status is SessionStatus.READY


@pytest.mark.parametrize("how", ["finished", "failed"])
def test_create_replaces_a_session_that_ended_by_itself(driver: Driver, how: str) -> None:
    old_token = _ready(driver, "alpha")
    _kill(driver, how, "alpha")
    replaced = driver.backend.create(create_request("alpha"))
    assert replaced.created is True
    assert replaced.status in ALIVE
    assert replaced.token.get_secret_value() != old_token
    ready = driver.backend.wait_ready("alpha", WAIT_S)
    assert ready.status is SessionStatus.READY
    assert [s.session_id for s in driver.backend.list()].count("alpha") == 1


def test_create_waits_out_a_terminating_session_then_starts_a_new_one(driver: Driver) -> None:
    old_token = _ready(driver, "alpha")
    driver.start_closing("alpha")
    closing = driver.backend.get("alpha")
    assert closing is not None and closing.status is SessionStatus.TERMINATING
    fresh = driver.backend.create(create_request("alpha"))
    assert fresh.created is True and fresh.status in ALIVE
    assert fresh.token.get_secret_value() != old_token
    assert driver.backend.wait_ready("alpha", WAIT_S).status is SessionStatus.READY


@pytest.mark.parametrize("how", ["finished", "failed"])
def test_a_no_wait_create_never_returns_a_dead_session(driver: Driver, how: str) -> None:
    _ready(driver, "alpha")
    _kill(driver, how, "alpha")
    returned = driver.backend.create(create_request("alpha"))  # what `create --no-wait` does
    assert returned.status not in DEAD
    assert returned.reason is None or returned.status in ALIVE


@pytest.mark.parametrize("how", ["finished", "failed"])
def test_waiting_for_a_dead_session_fails_with_the_reason(driver: Driver, how: str) -> None:
    _ready(driver, "alpha")
    _kill(driver, how, "alpha")
    with pytest.raises(SessionStartError):
        driver.backend.wait_ready("alpha", WAIT_S)


def test_delete_is_idempotent(driver: Driver) -> None:
    _ready(driver, "alpha")
    assert driver.backend.delete("alpha") is True
    assert driver.backend.get("alpha") is None
    assert driver.backend.delete("alpha") is False
    assert driver.backend.delete("never-there") is False


@pytest.mark.parametrize("how", ["finished", "failed"])
def test_delete_removes_a_dead_session(driver: Driver, how: str) -> None:
    _ready(driver, "alpha")
    _kill(driver, how, "alpha")
    assert driver.backend.delete("alpha") is True
    assert driver.backend.get("alpha") is None


def test_list_is_oldest_first_then_by_id(driver: Driver) -> None:
    for sid in ("bravo", "alpha", "charlie"):
        driver.backend.create(create_request(sid))
    listed = [s for s in driver.backend.list() if s.session_id in {"alpha", "bravo", "charlie"}]
    keys = [(s.created_at, s.session_id) for s in listed]
    assert keys == sorted(keys) and len(keys) == 3


def test_the_limit_counts_live_sessions_only(driver: Driver) -> None:
    # The local stack runs its default session all along: it is not counted.
    assert driver.backend.create(create_request("alpha", max_sessions=1)).created is True
    driver.backend.wait_ready("alpha", WAIT_S)
    with pytest.raises(SessionLimitError):
        driver.backend.create(create_request("bravo", max_sessions=1))
    _kill(driver, "finished", "alpha")
    # A finished session holds no slot: another id may start.
    assert driver.backend.create(create_request("bravo", max_sessions=1)).created is True
