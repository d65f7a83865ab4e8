"""The agent with the real GAM 7 (gam7 from PyPI), reached by the client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from session_runtime.client import SessionConnection
from tests.support.agents import RunningAgent, running_agent

TOKEN = "e2e-token-0123456789"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent("gam-e2e", TOKEN, tmp_path=tmp_path_factory.mktemp("gam")) as agent:
        yield agent


def test_gam_version_runs_through_the_agent_and_names_gam_7(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        result = conn.run("gam version", timeout=120)
    assert result.exit_code == 0
    assert "GAM 7." in result.stdout
    assert result.duration_ms >= 0


def test_welcome_reports_the_gam_version_once_known(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        conn.run("version", timeout=120)
    with SessionConnection.open(agent.url, TOKEN) as conn:
        assert conn.welcome.session_id == "gam-e2e"
        assert conn.welcome.protocol == "gamgui.session.v1"
        assert conn.welcome.gam_version is not None
        assert conn.welcome.gam_version.startswith("7.")


def test_a_command_needing_google_apis_ends_with_gams_own_error(agent: RunningAgent) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        result = conn.run("info domain", timeout=120)
    assert result.exit_code != 0
    assert "ERROR" in result.stderr
    assert "oauth2" in result.stderr.lower() or "client access" in result.stderr.lower()


def test_gam_writes_its_config_under_gamcfgdir_and_finds_no_credentials(
    agent: RunningAgent,
) -> None:
    with SessionConnection.open(agent.url, TOKEN) as conn:
        conn.run("version", timeout=120)
    config = (agent.gam_config_dir / "gam.cfg").read_text()
    # Cache and downloads stay under GAMCFGDIR: a pod's home is read-only.
    assert f"drive_dir = {agent.gam_config_dir / 'downloads'}" in config
    assert f"cache_dir = {agent.gam_config_dir / 'gamcache'}" in config
    assert agent.health()["credentials_found"] is False
