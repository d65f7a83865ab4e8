"""The console page's pure parts: its nginx location, the served directory, the URL, the CLI."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from session_runtime import naming
from session_runtime.cli import build_parser, main
from session_runtime.cli import console as console_cli
from session_runtime.console import (
    CONSOLE_PATH,
    VENDOR_FILES,
    console_dir_for,
    console_url,
    install_console,
    missing_vendor_files,
    remove_console,
)
from session_runtime.errors import BackendError
from session_runtime.nginx import NginxConfig, render_nginx_conf
from session_runtime.settings import WebSocketSettings


def _config(**overrides: object) -> NginxConfig:
    values: dict[str, object] = {"resolver": "10.96.0.10", "session_domain": "s.example"}
    values.update(overrides)
    return NginxConfig.model_validate(values)


def _node_modules(root: Path) -> Path:
    for rel in VENDOR_FILES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"/* {rel} */\n", encoding="utf-8")
    return root


def test_without_a_console_dir_the_proxy_serves_no_page() -> None:
    conf = render_nginx_conf(_config())

    assert CONSOLE_PATH not in conf and "alias" not in conf


def test_the_console_location_serves_its_directory_read_only_before_the_catch_all() -> None:
    conf = render_nginx_conf(_config(console_dir="/srv/console"))

    block = re.search(r"location \^~ /console/ \{(.*?)\n        \}", conf, re.DOTALL)
    assert block, conf
    body = block.group(1)
    assert "alias /srv/console/;" in body
    assert "limit_except GET" in body
    assert "Content-Security-Policy" in body and "connect-src 'self'" in body
    assert 'Cache-Control "no-store"' in body
    assert conf.index("location ^~ /console/") < conf.index("location / {")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("console", "console_dir must be an absolute path"),
        ("/srv/my console", "must be non-empty without spaces"),
        ("/srv/console;evil", "must be non-empty without spaces"),
        ("", "console_dir must be an absolute path"),
    ],
)
def test_a_bad_console_dir_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(console_dir=value)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_config_with_the_console(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    config = _config(
        console_dir=str(tmp_path / "console"),
        pid_path=str(tmp_path / "nginx.pid"),
        temp_dir=str(tmp_path / "tmp"),
        error_log=str(tmp_path / "error.log"),
        access_log=str(tmp_path / "access.log"),
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(config), encoding="utf-8")
    nginx = shutil.which("nginx")
    assert nginx
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_install_puts_the_page_and_the_xterm_files_in_one_readable_directory(
    tmp_path: Path,
) -> None:
    target = install_console(tmp_path / "console", _node_modules(tmp_path / "node_modules"))

    assert missing_vendor_files(target) == []
    assert (target / "index.html").read_bytes() == (
        resources.files("session_runtime.console").joinpath("index.html").read_bytes()
    )
    for path in [target / "index.html", *(target / "vendor").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_install_rebuilds_the_directory_and_reports_what_npm_did_not_install(
    tmp_path: Path,
) -> None:
    target = tmp_path / "console"
    install_console(target, _node_modules(tmp_path / "node_modules"))
    (target / "stale.html").write_text("old", encoding="utf-8")

    install_console(target, tmp_path / "nothing-installed")

    assert not (target / "stale.html").exists()
    assert (target / "index.html").is_file()
    assert missing_vendor_files(target) == list(VENDOR_FILES)


def test_the_served_directory_is_found_from_the_state_directory_outside_it(
    tmp_path: Path,
) -> None:
    first, second = console_dir_for(tmp_path / "a"), console_dir_for(tmp_path / "b")

    assert first == console_dir_for(tmp_path / "a" / ".." / "a")
    assert first != second
    assert first.parent == Path(tempfile.gettempdir())
    assert tmp_path not in first.parents


def test_install_and_remove_refuse_a_directory_that_is_not_the_stacks(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x", encoding="utf-8")
    link = tmp_path / "console"
    link.symlink_to(elsewhere)

    with pytest.raises(BackendError, match="not the local stack's") as info:
        install_console(link, tmp_path / "nothing-installed")
    assert "symlink" in str(info.value)
    with pytest.raises(BackendError, match="not the local stack's"):
        remove_console(link)
    assert (elsewhere / "keep").is_file()


def test_remove_takes_the_directory_away_and_tolerates_its_absence(tmp_path: Path) -> None:
    target = install_console(tmp_path / "console", tmp_path / "nothing-installed")

    remove_console(target)
    remove_console(target)

    assert not target.exists()


def test_the_page_loads_exactly_the_installed_files_and_speaks_the_protocol() -> None:
    page = resources.files("session_runtime.console").joinpath("index.html").read_text("utf-8")

    loaded = set(re.findall(r'(?:src|href)="vendor/([^"]+)"', page))
    assert loaded == set(VENDOR_FILES)
    assert f'"{naming.SUBPROTOCOL}"' in page
    assert f'"{naming.TOKEN_BEARER_PREFIX}"' in page
    assert f'"{naming.SESSION_PATH_PREFIX}"' in page
    assert "could not connect: check the token / session id" in page


def test_the_url_carries_id_and_token_only_in_the_fragment() -> None:
    url = console_url("http://127.0.0.1:8080/", "default", "a+b/c=d&e")

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.query) == (
        "http",
        "127.0.0.1:8080",
        CONSOLE_PATH,
        "",
    )
    assert parse_qs(parts.fragment) == {"id": ["default"], "token": ["a+b/c=d&e"]}


def test_console_is_a_cli_command_with_the_default_session_as_default() -> None:
    args = build_parser().parse_args(["console"])
    assert args.session_id == "default" and args.open is False


def test_console_on_a_cluster_backend_says_it_is_local_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = WebSocketSettings(_env_file=None, backend="kubernetes")  # type: ignore[call-arg]
    monkeypatch.setattr(console_cli, "make_manager", lambda: SimpleNamespace(settings=settings))

    assert main(["console", "--id", "default"]) == 1

    err = capsys.readouterr().err
    assert "The console page is served by the local stack only" in err
    assert "WEBSOCKET_BACKEND=local" in err


def test_console_without_a_running_stack_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("WEBSOCKET_BACKEND", "local")
    monkeypatch.setenv("WEBSOCKET_LOCAL_STATE_DIR", str(tmp_path))

    assert main(["console"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "The local stack is not running" in captured.err
    assert "gamgui-session local up" in captured.err


def test_console_with_a_bad_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--id", "Not_Valid"]) == 2
