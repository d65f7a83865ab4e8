"""Generated request lines through the real nginx: it goes nowhere but a valid session.

Each example is a batch of requests (arbitrary paths, percent-encodings, ids,
methods, Host headers) sent verbatim on one keep-alive connection. What nginx
did is read from its own records, not inferred from the replies: the access
log's ``upstream`` field (where it connected) and dnsmasq's query log (which
names it looked up). The properties:

* an upstream is only ever the agent of the session named by a path that is
  exactly ``/ws/session/<valid-id>/`` (plus a query string), on the agent port;
* the only names looked up are ``<valid-id>.<session domain>`` of such paths;
* everything else is answered by nginx itself with its JSON error.

The normal run sends a few thousand paths (``EXAMPLES`` batches of up to
``BATCH`` requests); ``GAMGUI_HYPOTHESIS_EXAMPLES=<n>`` sets the number of batches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.ids import DEFAULT_SESSION_ID, SESSION_ID_PATTERN
from session_runtime.models import CreateRequest
from tests.security.conftest import SecureStack
from tests.security.helpers import KeepAliveHttp, RawReply, hypothesis_examples
from tests.support.local_stack import LogCursor

EXAMPLES = hypothesis_examples(150)
BATCH = 30
#: Every name a proxyable request so far may have made nginx look up (the DNS log
#: is written asynchronously, so a lookup can show up in the next batch's window).
_LOOKUPS_ALLOWED: set[str] = set()
ROUTED_ID = "routed-one"

#: The one request shape that may be proxied (the spec, written independently of nginx.py).
#: No query string at all, not even an empty ``?``: nginx refuses one itself (400), so a
#: token put there never reaches an agent or a log.
_PROXYABLE = re.compile(rf"^{re.escape(naming.SESSION_PATH_PREFIX)}(?P<sid>{SESSION_ID_PATTERN})/$")
_ABSOLUTE_FORM = re.compile(r"^[hH][tT][tT][pP][sS]?://[^/?#]*(?=/)")
_NGINX_CODES = {"not_found", "bad_request", "upgrade_required", "session_unavailable"}


@dataclass(frozen=True)
class Routes:
    """Where each existing session's agent listens (``ip:port``)."""

    by_id: dict[str, str]


@pytest.fixture(scope="module")
def routes(secure_stack: SecureStack) -> Iterator[Routes]:
    backend = secure_stack.backend
    backend.create(
        CreateRequest(
            session_id=ROUTED_ID,
            token=SecretStr("routed-token-" + "x" * 20),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    try:
        backend.wait_ready(ROUTED_ID, timeout=30)
        by_id = {}
        for sid in (DEFAULT_SESSION_ID, ROUTED_ID):
            session = backend.get(sid)
            assert session is not None and session.agent_address is not None
            by_id[sid] = session.agent_address
        yield Routes(by_id)
    finally:
        backend.delete(ROUTED_ID)


@pytest.fixture(scope="module")
def http(secure_stack: SecureStack) -> Iterator[KeepAliveHttp]:
    client = KeepAliveHttp(secure_stack.proxy_port)
    try:
        yield client
    finally:
        client.close()


# --- the generated requests -------------------------------------------------------------
_valid_ids = st.one_of(
    st.sampled_from([DEFAULT_SESSION_ID, ROUTED_ID]),
    st.from_regex(rf"\A{SESSION_ID_PATTERN}\Z", fullmatch=True),
)
_tricky = st.sampled_from(
    ["default", "DEFAULT", "Default", "default.", ".default", "default..", "-x", "x-", "a" * 64,
     "a" * 63, "..", ".", "%2e%2e", "%2E%2e", "%2f", "%2F", "%00", "%5c", "\\", "%25", "%",
     "%%", "%u002e", "%c0%ae", "..%2f", "evil.example.com", "127.0.0.1", "169.254.169.254",
     "localhost:80", "[::1]", "user@evil", "a b", "a\tb", "a\x00b", "é", "\xff", "~", "*", "$sid",
     "${sid}", "%24sid", "default;", "default,x", "default:8080",
     f"default.{naming.session_domain()}", "xn--80ak6aa92e", "0", "-", "_", "a_b",
     "%64efault", "defaul%74"]
)  # fmt: skip
_percent = st.binary(min_size=1, max_size=4).map(lambda b: "".join(f"%{x:02X}" for x in b))
_printable = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=12
)
_latin1 = st.text(
    alphabet=st.characters(min_codepoint=0x80, max_codepoint=0xFF), min_size=1, max_size=3
)
_id_part = st.one_of(_valid_ids, _valid_ids, _tricky, _percent, _printable, _latin1)
_prefix = st.sampled_from(
    ["/ws/session/", "/ws/session/", "/ws/session/", "/ws/session", "/ws/session//",
     "/ws//session/", "//ws/session/", "/WS/session/", "/ws/Session/", "/ws/session/./",
     "/ws/x/../session/", "/ws/session/../session/", "/ws/session%2F", "/ws%2Fsession/",
     "/%77s/session/", "/ws/sessions/", "/ws/session/default/../",
     "http://evil.example.com/ws/session/",
     "http://localhost/ws/session/", "/ws/session/\\", "", "/", "*", "/healthz/../ws/session/"]
)  # fmt: skip
_suffix = st.one_of(
    st.sampled_from(
        ["/", "/", "/", "", "//", "/x", "/.", "/..", "/./", "/../", "/%2e%2e/", "%2F", "%2f/",
         "/?", "/?a=b", "/?token=abc", "/?x=%2F..%2F", "?x", "/#frag", "#/", "/;x", ";/", "/ ",
         "/%00", ".", ".evil.example.com/", ":1234/", "@evil/", "/%20", "/\\", "%20/",
         "/?a=b#c", "/?next=http://evil.example.com/"]
    ),
    _printable,
    _percent,
)  # fmt: skip
_target = st.tuples(_prefix, _id_part, _suffix).map("".join)
_host = st.one_of(
    st.just("localhost"),
    st.sampled_from(
        ["evil.example.com", "127.0.0.1:1", "169.254.169.254", f"default.{naming.session_domain()}",
         f"{ROUTED_ID}.{naming.session_domain()}:8080", "[::1]", "a..b", "x" * 80]
    ),
    st.from_regex(r"\A[a-z0-9.:-]{1,40}\Z", fullmatch=True),
)  # fmt: skip


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    host: str
    websocket: bool

    def headers(self) -> dict[str, str]:
        headers = {"Host": self.host}
        if self.websocket:
            headers.update(
                {
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Protocol": naming.SUBPROTOCOL,
                }
            )
        if self.method in ("POST", "PUT"):
            headers["Content-Length"] = "0"
        return headers


_requests = st.builds(
    Request,
    method=st.sampled_from(["GET", "GET", "GET", "GET", "POST", "HEAD", "OPTIONS", "PUT"]),
    target=_target,
    host=_host,
    websocket=st.sampled_from([True, True, True, False]),
)


def _proxyable(request: Request) -> str | None:
    """The session id the spec allows this request to reach, or None.

    An absolute-form target (``http://host/path``) names the same resource as
    its path (RFC 9112, 3.2.2); its authority never picks the upstream. Spaces
    after the target are the request line's separator, which nginx tolerates
    doubled.
    """
    target = _ABSOLUTE_FORM.sub("", request.target.rstrip(" "), count=1)
    match = _PROXYABLE.match(target)
    if match is None or request.method != "GET" or not request.websocket:
        return None
    return match.group("sid")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(_requests, min_size=BATCH // 3, max_size=BATCH))
def test_nginx_reaches_nothing_but_the_agent_of_a_valid_session_path(
    secure_stack: SecureStack, routes: Routes, http: KeepAliveHttp, batch: list[Request]
) -> None:
    cursor = LogCursor(secure_stack.stack)
    replies: list[RawReply] = []
    http.before_connect = lambda: cursor.access_entries(expect=len(replies))
    try:
        for r in batch:
            replies.append(http.request(r.method, r.target, r.headers()))
    finally:
        http.before_connect = None
    entries = cursor.access_entries(expect=len(batch))
    assert len(entries) == len(batch), "every request is logged exactly once"
    suffix = "." + naming.session_domain()

    for request, reply, entry in zip(batch, replies, entries, strict=True):
        sid = _proxyable(request)
        upstream = entry["upstream"]
        if sid is None:
            # Answered by nginx itself: nothing proxied, its own JSON error.
            assert upstream == "", f"{request} was proxied to {upstream}"
            assert reply.status in (400, 404, 426), (request, reply.status)
            if request.method != "HEAD":
                body = json.loads(reply.body)
                assert body["code"] in _NGINX_CODES and body["error"], (request, body)
            assert "gamgui-session-agent" not in reply.headers.get("server", "")
            continue
        _LOOKUPS_ALLOWED.add(sid + suffix)
        if reply.status == 400 and upstream == "" and request.host != "localhost":
            continue  # nginx refused the generated Host header itself: nothing proxied
        if sid in routes.by_id:
            # Reached the named session's agent, on the agent port, which wants a token.
            assert upstream == routes.by_id[sid], (request, upstream)
            assert upstream.rsplit(":", 1)[1] == str(naming.AGENT_PORT)
            assert reply.status == 401, (request, reply.status)
        else:
            assert upstream == "", (request, upstream)
            assert reply.status == 502, (request, reply.status)
            assert json.loads(reply.body)["code"] == "session_unavailable"

    for name in cursor.dns_queries():
        assert name in _LOOKUPS_ALLOWED, f"nginx looked up {name!r}"
