"""The nginx.conf renderer: one source for the Kubernetes proxy and the local stack.

The proxy routes ``/ws/session/<id>/`` to ``<id>.<session_domain>:<agent_port>``
through a ``resolver``, so the config is O(1) in the number of sessions and never
reloads. Safety comes from two strict checks before anything is proxied:

* the *normalised* path (``$uri``) must match the session-id rule from
  :mod:`session_runtime.ids` exactly (a ``location`` regex with a named capture,
  which becomes the only variable part of the upstream host), and
* the *raw* request line (``$request_uri``, which is what gets forwarded) must be
  that same path, unencoded, optionally followed by a query string.

So ``%2e%2e``, ``%2F``, ``%00``, dot segments and doubled slashes never reach an
upstream: the upstream can only be ``<valid-id>.<session_domain>:<agent_port>``
and the forwarded path only ``/ws/session/<that id>/``. Everything else is a
JSON error answered by nginx itself. The access log records the path without the
query string and the upstream address, so tests can see where nginx went.

Hardening beyond routing: a session path with a query string is refused before
anything is proxied (a token put there never reaches an agent or a log), a
request with a body gets 400 (a WebSocket handshake has none), a path with
bytes outside printable ASCII is logged as :data:`NON_ASCII_PATH` so every
access-log line stays valid UTF-8 JSON, a client must finish its headers within
``client_header_timeout_s``, and one client address may hold at most
``connections_per_client`` connections (generous: the browser-facing server
talks to every session from one address).
"""

from __future__ import annotations

import ipaddress
import json
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from session_runtime import naming
from session_runtime.console import CONSOLE_PATH
from session_runtime.ids import SESSION_ID_PATTERN

__all__ = [
    "ACCESS_LOG_FORMAT_NAME",
    "CODE_BAD_REQUEST",
    "CODE_NOT_FOUND",
    "CODE_SESSION_UNAVAILABLE",
    "CODE_TOO_MANY_CONNECTIONS",
    "CODE_UPGRADE_REQUIRED",
    "DEFAULT_CLIENT_HEADER_TIMEOUT_S",
    "DEFAULT_CONNECTIONS_PER_CLIENT",
    "NON_ASCII_PATH",
    "RESOLVER_VALID_S",
    "NginxConfig",
    "error_body",
    "render_nginx_conf",
]

#: Seconds nginx keeps a session's DNS answer (see ``NginxConfig.resolver_valid_s``).
RESOLVER_VALID_S = 1

#: JSON error codes nginx answers with (``{"error": ..., "code": ...}``).
CODE_NOT_FOUND = "not_found"
CODE_SESSION_UNAVAILABLE = "session_unavailable"
CODE_UPGRADE_REQUIRED = "upgrade_required"
CODE_BAD_REQUEST = "bad_request"
CODE_TOO_MANY_CONNECTIONS = "too_many_connections"
#: Seconds a client has to send its request headers (slowloris).
DEFAULT_CLIENT_HEADER_TIMEOUT_S = 10
#: Simultaneous connections one client address may hold. Generous on purpose:
#: behind it may be the browser-facing server, carrying every user's sessions.
DEFAULT_CONNECTIONS_PER_CLIENT = 4096
#: What the access log shows instead of a path holding bytes outside printable ASCII.
NON_ASCII_PATH = "<non-ascii path>"
#: Name of the JSON access-log format (one JSON object per line).
ACCESS_LOG_FORMAT_NAME = "session_json"

_DNS_NAME = re.compile(rf"^{SESSION_ID_PATTERN}(\.{SESSION_ID_PATTERN})*$")
# Paths and names are pasted into the config: refuse anything that could end a
# directive or open a block.
_UNSAFE_CONFIG_CHARS = re.compile(r"[\s;{}\"'\\$#]")


def error_body(message: str, code: str) -> str:
    """Return the JSON error body nginx sends, e.g. ``{"error": "...", "code": "not_found"}``.

    Args:
        message: the human text.
        code: the machine code (one of the ``CODE_*`` constants).
    """
    return json.dumps({"error": message, "code": code}, separators=(",", ":"))


def _check_host(value: str, *, what: str) -> str:
    """Accept an IP address (v4, or v6 in brackets or bare) or a DNS name."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not _DNS_NAME.fullmatch(value):
            raise ValueError(
                f"{what} must be an IP address or a DNS name (got {value!r})"
            ) from None
    return value


def _format_host(value: str) -> str:
    """Bracket a bare IPv6 address, as nginx wants in ``listen`` and ``resolver``."""
    if ":" in value and not value.startswith("["):
        return f"[{value}]"
    return value


class NginxConfig(BaseModel):
    """Everything the proxy's ``nginx.conf`` depends on, validated.

    Defaults are the in-cluster proxy's; the local stack overrides the listen
    address and port, the resolver, the paths and (when run as root) ``user``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_address: str = "0.0.0.0"  # noqa: S104 - the proxy pod listens on all interfaces
    listen_port: int = Field(naming.PROXY_PORT, ge=1, le=65535)
    resolver: str = Field(description="IP[:port] or hostname of the DNS server.")
    #: 1 s: a closed-and-recreated session answers within ~1 s of its new pod being
    #: Ready (10 s kept routing to the old pod IP). Cost: each proxy worker asks DNS
    #: at most once a second per session name in use, a handful of small UDP
    #: queries per second for hundreds of sessions, which kube-dns absorbs.
    resolver_valid_s: int = Field(RESOLVER_VALID_S, ge=0, le=86400)
    resolver_timeout_s: int = Field(5, ge=1, le=300)
    resolver_ipv6: bool = False
    session_domain: str
    agent_port: int = Field(naming.AGENT_PORT, ge=1, le=65535)
    connect_timeout_s: int = Field(5, ge=1, le=300)
    read_timeout_s: int = Field(8 * 3600, ge=1)
    send_timeout_s: int = Field(8 * 3600, ge=1)
    client_header_timeout_s: int = Field(DEFAULT_CLIENT_HEADER_TIMEOUT_S, ge=1, le=300)
    connections_per_client: int = Field(DEFAULT_CONNECTIONS_PER_CLIENT, ge=1, le=1_048_576)
    worker_connections: int = Field(32768, ge=64, le=1_048_576)
    worker_rlimit_nofile: int = Field(65536, ge=128, le=4_194_304)
    pid_path: str = "/tmp/nginx/nginx.pid"  # noqa: S108 - an emptyDir in the pod
    temp_dir: str = "/tmp/nginx"  # noqa: S108
    error_log: str = "/dev/stderr"
    access_log: str = "/dev/stdout"
    #: ``user`` directive; only meaningful when the master runs as root (local stack).
    user: str | None = None
    #: Directory served at ``/console/`` (the local stack's console page); None: no page.
    console_dir: str | None = None
    #: Port of a separate server answering only ``stub_status`` (metrics); None: no such server.
    status_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return _check_host(value, what="listen_address")

    @field_validator("resolver")
    @classmethod
    def _resolver(cls, value: str) -> str:
        host, port = value, None
        if value.startswith("["):
            host, _, rest = value.partition("]")
            host += "]"
            port = rest[1:] if rest.startswith(":") else None
            if rest and port is None:
                raise ValueError(f"resolver must be IP[:port] or a hostname (got {value!r})")
        elif value.count(":") == 1:
            host, port = value.split(":")
        _check_host(host, what="resolver")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"resolver port must be 1-65535 (got {value!r})")
        return value

    @field_validator("session_domain")
    @classmethod
    def _session_domain(cls, value: str) -> str:
        if not _DNS_NAME.fullmatch(value) or len(value) > 253 - 64:
            raise ValueError(
                "session_domain must be a lower-case DNS name short enough to prefix "
                f"a session id (got {value!r})"
            )
        return value

    @field_validator("console_dir")
    @classmethod
    def _console_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"console_dir must be an absolute path (got {value!r})")
        return value

    @field_validator("pid_path", "temp_dir", "error_log", "access_log", "user", "console_dir")
    @classmethod
    def _config_word(cls, value: str | None) -> str | None:
        if value is not None and (not value or _UNSAFE_CONFIG_CHARS.search(value)):
            raise ValueError(
                f"must be non-empty without spaces, quotes, ';', '{{', '}}', '$' or '#' "
                f"(got {value!r})"
            )
        return value


def _q(text: str) -> str:
    """Quote a string for nginx: single quotes, with quotes and backslashes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: The console page may load only its own files and talk only to its own origin.
_CONSOLE_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _console_location(directory: str) -> str:
    """Return the static ``location`` of the console page (GET/HEAD only, never cached)."""
    root = directory.rstrip("/") + "/"
    return f"""

        location ^~ {CONSOLE_PATH} {{
            limit_except GET {{
                deny all;
            }}
            alias {root};
            index index.html;
            types {{
                text/html html;
                text/javascript js;
                text/css css;
            }}
            charset utf-8;
            charset_types text/html text/javascript text/css;
            add_header Cache-Control "no-store" always;
            add_header Content-Security-Policy "{_CONSOLE_CSP}" always;
            add_header Referrer-Policy "no-referrer" always;
            add_header X-Content-Type-Options "nosniff" always;
        }}"""


def render_nginx_conf(config: NginxConfig) -> str:
    """Return the complete ``nginx.conf`` for ``config``.

    Args:
        config: the validated proxy settings.
    """
    c = config
    session_path = re.escape(naming.SESSION_PATH_PREFIX)
    # $uri (normalised) must be exactly the session path; the capture names the upstream.
    location_regex = f"^{session_path}(?<sid>{SESSION_ID_PATTERN})/$"
    # $request_uri (raw, what is forwarded) must be the same path unencoded (a
    # query string is refused before this check, by $has_query).
    raw_regex = f"~^{session_path}{SESSION_ID_PATTERN}/(?:[?][^#]*)?$"
    resolver = c.resolver
    if ":" in resolver and not resolver.startswith("[") and resolver.count(":") > 1:
        resolver = _format_host(resolver)
    resolver_ipv6 = "on" if c.resolver_ipv6 else "off"
    upstream = f"http://$sid.{c.session_domain}:{c.agent_port}$request_uri"
    t = c.temp_dir.rstrip("/") or "/"

    not_found = _q(error_body("no such path on the session proxy", CODE_NOT_FOUND))
    bad_session = _q(error_body("invalid session path", CODE_NOT_FOUND))
    upgrade = _q(
        error_body("a session path accepts only WebSocket upgrades", CODE_UPGRADE_REQUIRED)
    )
    unavailable = _q(error_body("session unknown or not reachable", CODE_SESSION_UNAVAILABLE))
    bad_request = _q(error_body("bad request", CODE_BAD_REQUEST))
    query_refused = _q(
        error_body(
            "a session path takes no query string (send the token in a header)", CODE_BAD_REQUEST
        )
    )
    body_refused = _q(error_body("a session request has no body", CODE_BAD_REQUEST))
    too_many = _q(error_body("too many connections from this address", CODE_TOO_MANY_CONNECTIONS))
    health = _q(json.dumps({"status": "ok"}, separators=(",", ":")))

    log_format = (
        '{"time":"$time_iso8601","remote":"$remote_addr","method":"$request_method",'
        '"path":"$request_path","status":"$status","upstream":"$upstream_addr",'
        '"upstream_status":"$upstream_status","request_time":"$request_time",'
        '"bytes_sent":"$bytes_sent"}'
    )
    user_line = f"user {c.user};\n" if c.user else ""
    console = _console_location(c.console_dir) if c.console_dir else ""
    status_server = ""
    if c.status_port is not None:
        # Its own port, so the NetworkPolicy can admit monitoring here and only here.
        status_server = f"""
    server {{
        listen {_format_host(c.listen_address)}:{c.status_port};
        server_name _;
        access_log off;

        location = {naming.PROXY_STATUS_PATH} {{
            stub_status;
        }}

        location / {{
            return 404 {not_found};
        }}
    }}
"""

    return f"""\
# Generated by session_runtime.nginx — do not edit by hand.
{user_line}worker_processes auto;
worker_rlimit_nofile {c.worker_rlimit_nofile};
pid {c.pid_path};
error_log {c.error_log} warn;

events {{
    worker_connections {c.worker_connections};
    multi_accept on;
}}

http {{
    server_tokens off;
    default_type application/json;
    charset_types application/json;
    client_body_temp_path {t}/client_body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    client_max_body_size 1k;

    # The raw path as the client sent it, without the query string (which
    # never reaches the log), and the upstream nginx went to (empty: none).
    map $request_uri $raw_request_path {{
        default "";
        "~^(?<request_path_only>[^?]*)" $request_path_only;
    }}
    # escape=json leaves bytes >= 0x80 as they came: a path that is not
    # printable ASCII is logged as a placeholder, so every line is UTF-8 JSON.
    map $raw_request_path $request_path {{
        default {_q(NON_ASCII_PATH)};
        "~^[ -~]*$" $raw_request_path;
    }}
    log_format {ACCESS_LOG_FORMAT_NAME} escape=json {_q(log_format)};
    access_log {c.access_log} {ACCESS_LOG_FORMAT_NAME};

    resolver {resolver} valid={c.resolver_valid_s}s ipv6={resolver_ipv6};
    resolver_timeout {c.resolver_timeout_s}s;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    map $http_upgrade $is_websocket {{
        default 0;
        "~*^websocket$" 1;
    }}
    map $request_uri $raw_session_path_ok {{
        default 0;
        "{raw_regex}" 1;
    }}
    map $request_uri $has_query {{
        default 0;
        "~[?]" 1;
    }}
    # A WebSocket handshake has no body: any length but 0, or any transfer coding.
    map "$http_content_length:$http_transfer_encoding" $has_body {{
        default 1;
        "~^0*:$" 0;
    }}
    client_header_timeout {c.client_header_timeout_s}s;
    limit_conn_zone $binary_remote_addr zone=per_client:10m;
    limit_conn per_client {c.connections_per_client};
    limit_conn_status 429;
    limit_conn_log_level warn;

    map $http_x_forwarded_proto $forwarded_proto {{
        default $http_x_forwarded_proto;
        '' $scheme;
    }}

    server {{
        listen {_format_host(c.listen_address)}:{c.listen_port} default_server;
        server_name _;
        merge_slashes off;

        # URI targets, not named locations: a request line nginx could not
        # parse (400) has no URI, and a named-location redirect would fail.
        error_page 400 413 =400 /_proxy_error/400;
        error_page 429 /_proxy_error/429;
        error_page 404 /_proxy_error/404;
        error_page 502 /_proxy_error/502;
        error_page 504 /_proxy_error/504;

        location = {naming.HEALTH_PATH} {{
            access_log off;
            return 200 {health};
        }}

        location ~ "{location_regex}" {{
            if ($has_query) {{
                return 400 {query_refused};
            }}
            if ($has_body) {{
                return 400 {body_refused};
            }}
            if ($raw_session_path_ok = 0) {{
                return 404 {bad_session};
            }}
            if ($request_method != GET) {{
                return 404 {bad_session};
            }}
            if ($is_websocket = 0) {{
                return 426 {upgrade};
            }}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $sid.{c.session_domain};
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $forwarded_proto;
            proxy_set_header X-Forwarded-Host $host;
            proxy_connect_timeout {c.connect_timeout_s}s;
            proxy_read_timeout {c.read_timeout_s}s;
            proxy_send_timeout {c.send_timeout_s}s;
            proxy_next_upstream off;
            proxy_buffering off;
            proxy_request_buffering off;
        }}{console}

        location / {{
            return 404 {not_found};
        }}

        location = /_proxy_error/400 {{
            internal;
            return 400 {bad_request};
        }}
        location = /_proxy_error/429 {{
            internal;
            return 429 {too_many};
        }}
        location = /_proxy_error/404 {{
            internal;
            return 404 {not_found};
        }}
        location = /_proxy_error/502 {{
            internal;
            return 502 {unavailable};
        }}
        location = /_proxy_error/504 {{
            internal;
            return 504 {unavailable};
        }}
    }}
{status_server}}}
"""
