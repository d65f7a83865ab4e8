"""The nginx.conf renderer: validated inputs, the routing rules, and `nginx -t` on every variant."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from session_runtime import naming
from session_runtime.ids import is_valid_session_id
from session_runtime.nginx import (
    CODE_NOT_FOUND,
    CODE_SESSION_UNAVAILABLE,
    NginxConfig,
    error_body,
    render_nginx_conf,
)

DOMAIN = naming.session_domain()


def _config(**overrides: object) -> NginxConfig:
    values: dict[str, object] = {"resolver": "10.96.0.10", "session_domain": DOMAIN}
    values.update(overrides)
    return NginxConfig.model_validate(values)


def _local_paths(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {
        "pid_path": str(tmp_path / "nginx.pid"),
        "temp_dir": str(tmp_path / "tmp"),
        "error_log": str(tmp_path / "error.log"),
        "access_log": str(tmp_path / "access.log"),
    }


def _python_regex(nginx_regex: str) -> re.Pattern[str]:
    """PCRE's ``(?<name>`` is Python's ``(?P<name>``."""
    return re.compile(nginx_regex.replace("(?<", "(?P<"))


def _session_regexes(conf: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    location = re.search(r'location ~ "([^"]+)"', conf)
    raw = re.search(
        r'map \$request_uri \$raw_session_path_ok \{\s*default 0;\s*"~([^"]+)" 1;', conf
    )
    assert location and raw
    return _python_regex(location.group(1)), _python_regex(raw.group(1))


def test_defaults_are_the_cluster_proxy() -> None:
    conf = render_nginx_conf(_config())
    assert f"listen 0.0.0.0:{naming.PROXY_PORT} default_server;" in conf
    assert "resolver 10.96.0.10 valid=1s ipv6=off;" in conf  # a re-created session at once
    assert "worker_processes auto;" in conf
    assert "worker_connections 32768;" in conf
    assert "worker_rlimit_nofile 65536;" in conf
    assert "server_tokens off;" in conf
    assert "proxy_read_timeout 28800s;" in conf
    assert "proxy_send_timeout 28800s;" in conf
    assert "daemon" not in conf  # the container's command sets it
    assert "user " not in conf


def test_upstream_is_the_captured_id_under_the_session_domain_and_agent_port() -> None:
    conf = render_nginx_conf(_config(agent_port=9000))
    assert f"proxy_pass http://$sid.{DOMAIN}:9000$request_uri;" in conf
    assert conf.count("proxy_pass") == 1


def test_websocket_headers_go_through_a_map() -> None:
    conf = render_nginx_conf(_config())
    assert "map $http_upgrade $connection_upgrade" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header} " in conf


def test_access_log_has_no_query_string_and_records_the_upstream() -> None:
    conf = render_nginx_conf(_config())
    log_format = next(line for line in conf.splitlines() if "log_format" in line)
    assert "$request_uri" not in log_format
    assert "$args" not in log_format and "$query_string" not in log_format
    assert "$request_path" in log_format
    assert "$upstream_addr" in log_format


def test_error_bodies_are_json_with_a_code() -> None:
    conf = render_nginx_conf(_config())
    for code in (CODE_NOT_FOUND, CODE_SESSION_UNAVAILABLE):
        assert f'"code":"{code}"' in conf
    assert json.loads(error_body("x", CODE_NOT_FOUND)) == {"error": "x", "code": "not_found"}


@pytest.mark.parametrize("sid", ["a", "default", "s-0123456789abcdef", "a" * 63, "a-b-c"])
def test_valid_session_paths_match_both_checks(sid: str) -> None:
    location, raw = _session_regexes(render_nginx_conf(_config()))
    path = naming.session_path(sid)
    match = location.fullmatch(path)
    assert match and match.group("sid") == sid
    assert raw.fullmatch(path)
    assert raw.fullmatch(path + "?x=1")


@pytest.mark.parametrize(
    "path",
    [
        "/ws/session/../",
        "/ws/session/a.b/",
        "/ws/session/UPPER/",
        "/ws/session/-x/",
        "/ws/session/x-/",
        f"/ws/session/{'a' * 64}/",
        "/ws/session/%2e%2e/",
        "/ws/session/abc%2F/",
        "/ws/session/abc/%00",
        "/ws/session/evil.example.com/",
        "/ws/session/abc",
        "/ws/session/abc/extra",
        "/ws/session//abc/",
        "//ws/session/abc/",
        "/ws/session/%61bc/",
    ],
)
def test_invalid_session_paths_are_refused_by_the_raw_check(path: str) -> None:
    _, raw = _session_regexes(render_nginx_conf(_config()))
    assert raw.fullmatch(path) is None


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_only_valid_ids_can_reach_the_upstream_host(candidate: str) -> None:
    location, raw = _session_regexes(render_nginx_conf(_config()))
    path = f"/ws/session/{candidate}/"
    match = location.fullmatch(path)
    if match and raw.fullmatch(path):
        assert is_valid_session_id(match.group("sid"))
        assert match.group("sid") == candidate


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("resolver", "10.0.0.1; evil", "resolver must be an IP address or a DNS name"),
        ("resolver", "10.0.0.1:99999", "resolver port must be 1-65535"),
        ("resolver", "", "resolver must be an IP address or a DNS name"),
        ("session_domain", "Sessions.Example", "session_domain must be a lower-case DNS name"),
        ("session_domain", "a..b", "session_domain must be a lower-case DNS name"),
        ("listen_address", "0.0.0.0 ssl", "listen_address must be an IP address"),
        ("pid_path", "/tmp/x;y", "must be non-empty without spaces"),
        ("access_log", "/dev/stdout main", "must be non-empty without spaces"),
        ("temp_dir", "", "must be non-empty"),
        ("agent_port", 0, "greater than or equal to 1"),
        ("listen_port", 70000, "less than or equal to 65535"),
    ],
)
def test_bad_values_are_rejected_naming_the_rule(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        _config(**{field: value})
    assert field in str(info.value)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra_field"):
        _config(extra_field=1)


def test_the_config_is_frozen() -> None:
    config = _config()
    with pytest.raises(ValidationError, match="frozen"):
        config.listen_port = 1  # type: ignore[misc]


def test_a_bare_ipv6_resolver_and_listen_address_are_bracketed() -> None:
    conf = render_nginx_conf(_config(resolver="fd00::a", listen_address="::"))
    assert "resolver [fd00::a] valid=1s" in conf
    assert f"listen [::]:{naming.PROXY_PORT}" in conf


VARIANTS: dict[str, dict[str, object]] = {
    "kubernetes": {},
    "local": {
        "listen_address": "127.0.0.1",
        "listen_port": 18080,
        "resolver": "127.0.0.1:15353",
        "session_domain": "gamgui-sessions.local.test",
        "agent_port": 18081,
        "worker_rlimit_nofile": 1024,
        "worker_connections": 512,
    },
    "ipv6-resolver": {"resolver": "[::1]:53", "resolver_ipv6": True},
    "hostname-resolver": {"resolver": "localhost", "resolver_valid_s": 0},
    "short-timeouts": {"read_timeout_s": 60, "send_timeout_s": 60, "connect_timeout_s": 1},
}


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nginx_accepts_every_rendered_variant(variant: str, tmp_path: Path) -> None:
    config = _config(**{**VARIANTS[variant], **_local_paths(tmp_path)})
    conf_path = tmp_path / "nginx.conf"
    conf_path.write_text(render_nginx_conf(config))
    nginx = shutil.which("nginx")
    assert nginx
    result = subprocess.run(
        [
            nginx,
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "error.log"),
            "-c",
            str(conf_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
