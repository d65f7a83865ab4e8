"""The agent's environment parsing, credential copying and GAM environment (no processes)."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.agent.config import load_config
from session_runtime.agent.credentials import CREDENTIAL_FILES, copy_credentials
from session_runtime.agent.runner import CommandRun
from session_runtime.agent.session import gam_environment
from session_runtime.errors import SettingsError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        naming.ENV_SESSION_ID: "s1",
        naming.ENV_SESSION_TOKEN: "t0ken",
        naming.ENV_GAMCFGDIR: str(tmp_path / "cfg"),
    }
    env.update(extra)
    return env


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    config = load_config(_env(tmp_path))
    assert config.host == "0.0.0.0"
    assert config.port == naming.AGENT_PORT == 8080
    assert config.gam_bin == "gam"
    assert config.idle_timeout_s == 0
    assert config.initial_command is None
    assert config.gam_config_dir.is_dir()
    assert config.max_connections == 8
    assert "t0ken" not in repr(config)


def test_the_connection_limit_comes_from_the_environment(tmp_path: Path) -> None:
    config = load_config(_env(tmp_path, **{naming.ENV_MAX_CONNECTIONS: "500"}))
    assert config.max_connections == 500


def test_the_token_file_wins_over_the_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    config = load_config(_env(tmp_path, **{naming.ENV_SESSION_TOKEN_FILE: str(token_file)}))
    assert config.token.get_secret_value() == "from-file"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({naming.ENV_SESSION_ID: ""}, "SESSION_ID is required"),
        ({naming.ENV_SESSION_ID: "UPPER"}, "SESSION_ID is invalid"),
        ({naming.ENV_SESSION_TOKEN: ""}, "refuses to start without a session token"),
        ({naming.ENV_SESSION_TOKEN: "two words"}, "SESSION_TOKEN must be one printable word"),
        (
            {naming.ENV_SESSION_TOKEN_FILE: "/nonexistent/token"},
            "SESSION_TOKEN_FILE cannot be read",
        ),
        ({naming.ENV_AGENT_PORT: "http"}, "SESSION_AGENT_PORT must be a TCP port"),
        ({naming.ENV_AGENT_PORT: "70000"}, "SESSION_AGENT_PORT must be a TCP port"),
        ({naming.ENV_IDLE_TIMEOUT: "soon"}, "SESSION_IDLE_TIMEOUT must be a number"),
        ({naming.ENV_IDLE_TIMEOUT: "-1"}, "SESSION_IDLE_TIMEOUT must be a finite number"),
        ({naming.ENV_COMMAND_TIMEOUT: "inf"}, "SESSION_COMMAND_TIMEOUT must be a finite number"),
        ({naming.ENV_MAX_CONNECTIONS: "0"}, "SESSION_MAX_CONNECTIONS must be an integer from 1"),
        ({naming.ENV_MAX_CONNECTIONS: "lots"}, "SESSION_MAX_CONNECTIONS must be an integer"),
        ({naming.ENV_MAX_CONNECTIONS: "10001"}, "SESSION_MAX_CONNECTIONS must be an integer"),
    ],
)
def test_bad_environment_names_the_variable(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_config(_env(tmp_path, **overrides))
    assert message in str(info.value)
    assert "t0ken" not in str(info.value)


def test_unwritable_gamcfgdir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(SettingsError, match="GAMCFGDIR cannot be created"):
        load_config(_env(tmp_path, **{naming.ENV_GAMCFGDIR: str(target / "sub")}))


def test_without_gamcfgdir_a_fresh_private_dir_is_used_never_home(tmp_path: Path) -> None:
    env = _env(tmp_path)
    del env[naming.ENV_GAMCFGDIR]
    config = load_config(env)
    assert config.gam_config_dir.is_dir()
    assert ".gam" not in config.gam_config_dir.parts


def test_only_known_credential_files_are_copied_with_mode_0600(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    for name in (*CREDENTIAL_FILES, "other.key"):
        (source / name).write_text(name)
        (source / name).chmod(0o444)
    assert copy_credentials(source, target) == list(CREDENTIAL_FILES)
    for name in CREDENTIAL_FILES:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
        assert (target / name).read_text() == name
    assert not (target / "other.key").exists()
    # Copying again over existing files keeps working (GAM may have rewritten them).
    assert copy_credentials(source, target) == list(CREDENTIAL_FILES)


def test_missing_credentials_dir_means_no_credentials(tmp_path: Path) -> None:
    assert copy_credentials(None, tmp_path) == []
    assert copy_credentials(tmp_path / "absent", tmp_path) == []


def test_gam_environment_points_gam_at_gamcfgdir_and_drops_the_token(tmp_path: Path) -> None:
    config = load_config(_env(tmp_path))
    env = gam_environment(config, {"SESSION_TOKEN": "t0ken", "PATH": "/bin", "HOME": "/root"})
    assert "SESSION_TOKEN" not in env
    assert env["GAMCFGDIR"] == str(config.gam_config_dir)
    assert env["GAMDRIVEDIR"].startswith(str(config.gam_config_dir))
    assert env["PATH"] == "/bin"


def test_a_multibyte_character_split_across_reads_survives(tmp_path: Path) -> None:
    script = (
        "import sys,time;o=sys.stdout.buffer;"
        "o.write(b'\\xc3');o.flush();time.sleep(0.2);o.write(b'\\xa9\\n')"
    )
    received: list[str] = []

    async def sink(stream: str, data: str) -> None:
        received.append(data)

    run = CommandRun([sys.executable, "-c", script], sink, env={}, cwd=tmp_path, kill_grace_s=1)
    outcome = asyncio.run(run.run())
    assert outcome.code == 0
    assert "".join(received) == "é\n"


def test_a_missing_gam_binary_is_exit_127_with_a_message(tmp_path: Path) -> None:
    received: list[tuple[str, str]] = []

    async def sink(stream: str, data: str) -> None:
        received.append((stream, data))

    run = CommandRun(
        [str(tmp_path / "no-gam"), "version"], sink, env={}, cwd=tmp_path, kill_grace_s=1
    )
    outcome = asyncio.run(run.run())
    assert outcome.code == 127
    assert received[0][0] == "stderr"
    assert "cannot execute" in received[0][1]
