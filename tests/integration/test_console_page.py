"""The console page as the local stack's nginx serves it (no browser: raw HTTP and the CLI)."""

from __future__ import annotations

import json

import pytest

from session_runtime.backends.local import LocalStack
from session_runtime.cli import main
from session_runtime.cli.local import stack_env
from session_runtime.console import VENDOR_FILES, console_dir_for, missing_vendor_files
from session_runtime.nginx import CODE_NOT_FOUND
from tests.support.local_stack import raw_request


def test_the_page_is_html_with_a_strict_content_security_policy(proxy_port: int) -> None:
    reply = raw_request(proxy_port, "/console/", websocket=False)

    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert reply.headers["x-content-type-options"] == "nosniff"
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert b"<title>GAM console</title>" in reply.body


def test_xterm_is_served_beside_the_page(local_stack: LocalStack, proxy_port: int) -> None:
    if missing_vendor_files(console_dir_for(local_stack.state.root)):
        pytest.skip("xterm.js is not installed (scripts/bootstrap.sh installs it)")
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for name in VENDOR_FILES:
        reply = raw_request(proxy_port, f"/console/vendor/{name}", websocket=False)
        assert reply.status == 200, name
        assert reply.headers["content-type"] == types[name[name.rindex(".") :]]


@pytest.mark.parametrize(
    "target",
    [
        "/console/no-such-file.html",
        "/console/..%2f..%2f..%2f..%2fetc/passwd",
        "/console/../../../../etc/passwd",
        "/console../etc/passwd",
        "/console/vendor/../../../../../etc/passwd",
        "/console/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_nothing_outside_the_page_directory_is_served(proxy_port: int, target: str) -> None:
    reply = raw_request(proxy_port, target, websocket=False)

    assert reply.status in (400, 404), reply
    assert b"root:" not in reply.body
    assert json.loads(reply.body)["code"] in (CODE_NOT_FOUND, "bad_request")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_page_is_read_only(proxy_port: int, method: str) -> None:
    reply = raw_request(proxy_port, "/console/", websocket=False, method=method)

    assert reply.status == 403


def test_the_cli_prints_the_url_of_a_session_and_refuses_an_unknown_one(
    local_stack: LocalStack,
    default_token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy_url = local_stack.proxy_url()
    assert proxy_url is not None
    for name, value in stack_env(local_stack.state.root, proxy_url).items():
        monkeypatch.setenv(name, value)

    assert main(["console", "--id", "default", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["url"].startswith(f"{proxy_url}/console/#id=default&token=")
    assert printed["url"].endswith(default_token)

    assert main(["console", "--id", "no-such-session"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Error joining session" in captured.err
