"""The proxy refuses bad paths itself, with JSON, and never proxies them (log-proven)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.ids import DEFAULT_SESSION_ID, is_valid_session_id
from tests.support.local_stack import LogCursor, raw_request

REFUSED = [
    # (request target, status, code)
    ("/ws/session/../", 404, "not_found"),
    ("/ws/session/a.b/", 404, "not_found"),
    ("/ws/session/UPPER/", 404, "not_found"),
    ("/ws/session/-x/", 404, "not_found"),
    ("/ws/session/x-/", 404, "not_found"),
    (f"/ws/session/{'a' * 64}/", 404, "not_found"),
    ("/ws/session/%2e%2e/", 404, "not_found"),
    ("/ws/session/default/%2e%2e/", 404, "not_found"),
    ("/ws/session/default%2F/", 404, "not_found"),
    ("/ws/session/%2Fdefault/", 404, "not_found"),
    ("/ws/session/%64efault/", 404, "not_found"),
    ("/ws/session/default/%00", 400, "bad_request"),
    ("/ws/session/evil.example.com/", 404, "not_found"),
    ("http://evil.example.com/ws/session/evil.example.com/", 404, "not_found"),
    ("/ws/session/default", 404, "not_found"),
    ("/ws/session/default/extra", 404, "not_found"),
    ("/ws/session//default/", 404, "not_found"),
    ("/ws/session/", 404, "not_found"),
    ("/", 404, "not_found"),
    ("/etc/passwd", 404, "not_found"),
]


@pytest.mark.parametrize(("target", "status", "code"), REFUSED)
def test_the_proxy_refuses_without_proxying(
    local_stack: LocalStack, proxy_port: int, target: str, status: int, code: str
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(proxy_port, target)
    assert reply.status == status
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert isinstance(body, dict) and body["code"] == code and body["error"]
    (entry,) = cursor.access_entries()
    assert entry["status"] == str(status)
    assert entry["upstream"] == ""
    assert cursor.dns_queries() == []


def test_a_plain_get_to_a_session_path_is_refused_without_proxying(
    local_stack: LocalStack, proxy_port: int
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(proxy_port, naming.session_path(DEFAULT_SESSION_ID), websocket=False)
    assert reply.status == 426
    assert reply.json() == {
        "error": "a session path accepts only WebSocket upgrades",
        "code": "upgrade_required",
    }
    (entry,) = cursor.access_entries()
    assert entry["upstream"] == ""
    assert cursor.dns_queries() == []


def test_a_post_to_a_session_path_is_refused_without_proxying(
    local_stack: LocalStack, proxy_port: int
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(proxy_port, naming.session_path(DEFAULT_SESSION_ID), method="POST")
    assert reply.status == 404
    assert (entry := cursor.access_entries()[0])["upstream"] == ""
    assert entry["method"] == "POST"


def test_the_host_header_cannot_steer_the_upstream(
    local_stack: LocalStack, backend: LocalBackend, proxy_port: int
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(
        proxy_port, naming.session_path(DEFAULT_SESSION_ID), host="evil.example.com"
    )
    assert reply.status == 401  # reached the default session's agent, which wants a token
    default = backend.get(DEFAULT_SESSION_ID)
    assert default is not None
    (entry,) = cursor.access_entries()
    assert entry["upstream"] == default.agent_address
    assert all("evil" not in name for name in cursor.dns_queries())


def test_an_unknown_session_gets_502_session_unavailable_and_only_its_own_name_is_looked_up(
    local_stack: LocalStack, proxy_port: int
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(proxy_port, naming.session_path("nobody-here"))
    assert reply.status == 502
    assert reply.json() == {
        "error": "session unknown or not reachable",
        "code": "session_unavailable",
    }
    assert cursor.access_entries()[0]["upstream"] == ""
    assert cursor.dns_queries() == [f"nobody-here.{naming.session_domain()}"]


def test_health_is_answered_by_nginx_itself(local_stack: LocalStack, proxy_port: int) -> None:
    reply = raw_request(proxy_port, naming.HEALTH_PATH, websocket=False)
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}
    assert "server" not in reply.headers or reply.headers["server"] == "nginx"


_PATH_PIECES = st.sampled_from(
    ["default", "a", "x-", "-x", "A", ".", "..", "/", "//", "%2e", "%2E", "%2f", "%2F", "%00",
     "%5c", "\\", "%25", "%", "?", "#", ";", ":", "@", "evil.example.com", "127.0.0.1",
     "default.", "%64efault", "~", "a" * 63, "a" * 64, "-", "0"]
)  # fmt: skip


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(tail=st.lists(_PATH_PIECES, max_size=6).map("".join))
def test_whatever_the_path_only_a_valid_session_name_is_ever_looked_up_or_proxied(
    local_stack: LocalStack, backend: LocalBackend, proxy_port: int, tail: str
) -> None:
    cursor = LogCursor(local_stack)
    reply = raw_request(proxy_port, f"/ws/session/{tail}")
    assert reply.status in (101, 400, 401, 404, 426, 502)
    assert isinstance(reply.json(), dict) or reply.status == 101
    default = backend.get(DEFAULT_SESSION_ID)
    assert default is not None
    (entry,) = cursor.access_entries()
    assert entry["upstream"] in ("", default.agent_address)
    suffix = "." + naming.session_domain()
    for name in cursor.dns_queries():
        assert name.endswith(suffix) and is_valid_session_id(name.removesuffix(suffix))
