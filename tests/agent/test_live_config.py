"""SESSION_REPLAY_BYTES and SESSION_DETACH_TIMEOUT: defaults, values, refusals (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.agent.config import DEFAULT_REPLAY_BYTES, MAX_REPLAY_BYTES, load_config
from session_runtime.errors import SettingsError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        naming.ENV_SESSION_ID: "s1",
        naming.ENV_SESSION_TOKEN: "t0ken",
        naming.ENV_GAMCFGDIR: str(tmp_path / "cfg"),
        **extra,
    }


def test_the_replay_buffer_is_4_mib_and_detach_follows_the_idle_timeout_by_default(
    tmp_path: Path,
) -> None:
    config = load_config(_env(tmp_path))
    assert config.replay_bytes == DEFAULT_REPLAY_BYTES == 4 * 1024 * 1024
    assert config.detach_timeout_s == config.idle_timeout_s == 0
    config = load_config(_env(tmp_path, **{naming.ENV_IDLE_TIMEOUT: "1800"}))
    assert config.detach_timeout_s == 1800


def test_both_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        naming.ENV_IDLE_TIMEOUT: "1800",
        naming.ENV_DETACH_TIMEOUT: "90.5",
        naming.ENV_REPLAY_BYTES: "65536",
    }
    config = load_config(_env(tmp_path, **env))
    assert (config.detach_timeout_s, config.replay_bytes) == (90.5, 65536)
    assert load_config(_env(tmp_path, **{naming.ENV_DETACH_TIMEOUT: "0"})).detach_timeout_s == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            naming.ENV_REPLAY_BYTES,
            "0",
            f"SESSION_REPLAY_BYTES must be an integer from 1 to {MAX_REPLAY_BYTES}",
        ),
        (naming.ENV_REPLAY_BYTES, "4MiB", "SESSION_REPLAY_BYTES must be an integer"),
        (
            naming.ENV_REPLAY_BYTES,
            str(MAX_REPLAY_BYTES + 1),
            "SESSION_REPLAY_BYTES must be an integer",
        ),
        (naming.ENV_DETACH_TIMEOUT, "-1", "SESSION_DETACH_TIMEOUT must be a finite number >= 0"),
        (naming.ENV_DETACH_TIMEOUT, "soon", "SESSION_DETACH_TIMEOUT must be a number of seconds"),
        (naming.ENV_DETACH_TIMEOUT, "inf", "SESSION_DETACH_TIMEOUT must be a finite number >= 0"),
    ],
)
def test_bad_values_stop_the_agent_naming_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_config(_env(tmp_path, **{name: value}))
    assert str(info.value).startswith(message)
    assert value[:40] in str(info.value)
