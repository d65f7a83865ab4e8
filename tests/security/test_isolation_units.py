"""The pieces of isolation without a stack: reachability, user names, token hand-off, flags."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.agent.config import TokenSpentError, _mount_fs_type, load_config
from session_runtime.backends.local.dns import dnsmasq_argv
from session_runtime.backends.local.identity import (
    SESSION_USER_PREFIX,
    blocked_path,
    script_interpreter,
    session_user_name,
)
from session_runtime.nginx import NginxConfig, render_nginx_conf


def _tree(root: Path) -> Path:
    (root / "open" / "closed").mkdir(parents=True)
    for path in (root, root / "open"):
        path.chmod(0o755)
    (root / "open" / "closed").chmod(0o700)
    target = root / "open" / "closed" / "python"
    target.write_text("#!/bin/true\n", encoding="utf-8")
    target.chmod(0o755)
    return target


def test_a_file_under_a_private_directory_is_blocked_at_that_directory() -> None:
    with tempfile.TemporaryDirectory() as raw:
        root = Path(raw)
        root.chmod(0o755)
        target = _tree(root)
        assert blocked_path(target) == root / "open" / "closed"
        link = root / "open" / "python"
        link.symlink_to(target)
        assert blocked_path(link) == root / "open" / "closed"  # through the symlink
        (root / "open" / "closed").chmod(0o711)
        assert blocked_path(link) is None
        target.chmod(0o700)
        assert blocked_path(target) == target  # the file itself is private


def test_the_interpreter_of_a_script_is_found() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write("#!/opt/py/bin/python3 -u\nprint()\n")
    try:
        assert script_interpreter(handle.name) == "/opt/py/bin/python3"
        assert script_interpreter("/nonexistent") is None
    finally:
        os.unlink(handle.name)


def test_session_user_names_are_stable_per_stack_and_distinct_across_stacks() -> None:
    a = session_user_name(Path("/var/lib/a"), "alice")
    assert a == session_user_name(Path("/var/lib/a"), "alice")
    assert a != session_user_name(Path("/var/lib/b"), "alice")
    assert a != session_user_name(Path("/var/lib/a"), "bob")
    assert a.startswith(SESSION_USER_PREFIX) and len(a) <= 32  # useradd's limit


def _env(tmp_path: Path, token_file: str) -> dict[str, str]:
    return {
        naming.ENV_SESSION_ID: "s1",
        naming.ENV_SESSION_TOKEN_FILE: token_file,
        naming.ENV_GAMCFGDIR: str(tmp_path / "gamcfg"),
    }


def test_a_token_on_a_pipe_is_read_and_the_descriptor_closed(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"tok-from-pipe\n")
    os.close(write_end)
    config = load_config(_env(tmp_path, f"/dev/fd/{read_end}"))
    assert config.token.get_secret_value() == "tok-from-pipe"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(read_end)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a tmpfs at /dev/shm")
def test_a_token_file_on_a_memory_volume_is_deleted_once_read(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as volume:
        token = Path(volume) / "token"
        token.write_text("tok-in-memory\n", encoding="utf-8")
        config = load_config(_env(tmp_path, str(token)))
        assert config.token.get_secret_value() == "tok-in-memory"
        assert not token.exists()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a tmpfs at /dev/shm")
def test_a_restarted_agent_finds_its_token_spent_and_exits_with_the_code_the_reaper_knows(
    tmp_path: Path,
) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as volume:
        token = Path(volume) / "token"
        token.write_text("tok-once\n", encoding="utf-8")
        load_config(_env(tmp_path, str(token)))  # the first start reads (and removes) it
        with pytest.raises(TokenSpentError, match="already read: this container restarted"):
            load_config(_env(tmp_path, str(token)))
        env = {**os.environ, **_env(tmp_path, str(token))}
        restarted = subprocess.run(
            [sys.executable, "-m", "session_runtime.agent"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert restarted.returncode == naming.AGENT_EXIT_TOKEN_SPENT, restarted.stderr
    assert "already read" in restarted.stderr
    assert "tok-once" not in restarted.stderr + restarted.stdout


def test_a_token_file_elsewhere_is_left_to_its_owner(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-on-disk\n", encoding="utf-8")
    if _mount_fs_type(token) in ("tmpfs", "ramfs"):
        pytest.skip("the test's temporary directory is itself in memory")
    assert load_config(_env(tmp_path, str(token))).token.get_secret_value() == "tok-on-disk"
    assert token.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_agent_entry_point_makes_the_process_non_dumpable() -> None:
    code = (
        "from session_runtime.agent.hardening import is_dumpable, make_undumpable\n"
        "before = is_dumpable(); make_undumpable()\n"
        "print(before, is_dumpable())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["True", "False"]
    main = Path(__file__).resolve().parents[2] / "session_runtime" / "agent" / "__main__.py"
    text = main.read_text(encoding="utf-8")
    assert text.index("make_undumpable()") < text.index("from session_runtime.agent.app")


def test_the_proxy_config_carries_the_header_timeout_and_the_connection_limit() -> None:
    conf = render_nginx_conf(
        NginxConfig(resolver="127.0.0.1:53", session_domain="s.example", connections_per_client=7)
    )
    assert "client_header_timeout 10s;" in conf
    assert "limit_conn per_client 7;" in conf and "limit_conn_status 429;" in conf


def test_dnsmasq_is_told_its_unprivileged_user_when_started_as_root(tmp_path: Path) -> None:
    argv = dnsmasq_argv(
        "/usr/sbin/dnsmasq",
        port=5353,
        domain="s.example",
        hosts_file=tmp_path / "hosts",
        pid_file=tmp_path / "pid",
        log_queries=False,
        log_file=tmp_path / "log",
        user="root",
    )
    if os.geteuid() == 0:
        assert "--user=root" in argv and "--group=root" in argv
    else:
        assert not any(a.startswith("--user") for a in argv)
