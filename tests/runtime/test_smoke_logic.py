"""Smoke checks against a stub proxy (a tiny HTTP server on loopback) and a fake connector."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from session_runtime.errors import HandshakeRejectedError, SessionUnreachableError
from session_runtime.manager import SessionManager
from session_runtime.settings import load_settings
from session_runtime.smoke import check_proxy
from tests.runtime.fakes import FakeBackend, FakeNetwork


class _Proxy(BaseHTTPRequestHandler):
    health_status = 200
    invalid_body = b'{"error": "not found", "code": "not_found"}'

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(self.health_status, b'{"status":"ok"}')
        else:
            self._answer(404, self.invalid_body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        _Proxy.health_status = 200
        _Proxy.invalid_body = b'{"error": "not found", "code": "not_found"}'


def _manager(port: int, network: FakeNetwork) -> SessionManager:
    settings = load_settings(
        proxy_service_url=f"http://127.0.0.1:{port}",
        session_connection_template=f"ws://127.0.0.1:{port}/ws/session/{{{{SESSION_ID}}}}/",
    )
    backend = FakeBackend()
    manager = SessionManager(settings, backend, connector=network)
    manager.create_session("default", wait=False)
    return manager


def _refuse_unknown(url: str, token: str) -> Exception | None:
    if "/smoke-" in url:
        return SessionUnreachableError(status=502, code="session_unavailable")
    return None


def test_check_proxy_passes_every_step_on_a_healthy_proxy(proxy: ThreadingHTTPServer) -> None:
    network = FakeNetwork(refuse=_refuse_unknown)
    report = check_proxy(manager=_manager(proxy.server_address[1], network))
    assert report.ok, report
    assert [s.name for s in report.steps] == [
        "backend",
        "health",
        "invalid-path-refused",
        "unknown-session-refused",
        "default-session",
    ]
    assert report.first_failure is None
    assert "502 session_unavailable" in report.steps[3].detail
    assert network.opened[-1].pings == 1


def test_check_proxy_stops_at_an_unhealthy_proxy(proxy: ThreadingHTTPServer) -> None:
    _Proxy.health_status = 503
    report = check_proxy(manager=_manager(proxy.server_address[1], FakeNetwork()))
    assert not report.ok
    assert [s.name for s in report.steps] == ["backend", "health"]
    assert report.first_failure is not None
    assert "answered 503" in report.first_failure.detail


def test_check_proxy_fails_when_invalid_paths_get_html_pages(proxy: ThreadingHTTPServer) -> None:
    _Proxy.invalid_body = b"<html>404</html>"
    report = check_proxy(manager=_manager(proxy.server_address[1], FakeNetwork()))
    assert report.first_failure is not None
    assert report.first_failure.name == "invalid-path-refused"


def test_check_proxy_fails_when_an_unknown_session_has_no_error_code(
    proxy: ThreadingHTTPServer,
) -> None:
    network = FakeNetwork(
        refuse=lambda url, token: (
            HandshakeRejectedError("x", status=404) if "/smoke-" in url else None
        )
    )
    report = check_proxy(manager=_manager(proxy.server_address[1], network))
    assert report.first_failure is not None
    assert report.first_failure.name == "unknown-session-refused"
    assert "without a JSON error code" in report.first_failure.detail


def test_check_proxy_reports_an_unreachable_proxy_as_a_connect_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    report = check_proxy(manager=_manager(port, FakeNetwork()))
    assert report.first_failure is not None
    assert report.first_failure.error is not None
    assert report.first_failure.error["error"] == "SessionConnectError"
    assert json.loads(report.model_dump_json())["ok"] is False
