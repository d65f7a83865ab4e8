"""Fixtures for agent tests: a fake GAM and an agent running it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from session_runtime import naming
from tests.support.agents import RunningAgent, running_agent
from tests.support.fake_gam import fake_gam_bin

TOKEN = "agent-test-token-5f1c9a"
#: Seconds the module agent lets a command run with no client attached.
DETACH_TIMEOUT_S = 1.0
SESSION_ID = "sess-a"


@pytest.fixture(scope="module")
def fake_gam(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of an executable fake GAM."""
    return fake_gam_bin(tmp_path_factory.mktemp("fakegam"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, fake_gam: str) -> Iterator[RunningAgent]:
    """One agent for the module, running the fake GAM; a detached command ends after 1 s."""
    with running_agent(
        SESSION_ID,
        TOKEN,
        tmp_path=tmp_path_factory.mktemp("agent"),
        gam_bin=fake_gam,
        extra_env={naming.ENV_DETACH_TIMEOUT: str(DETACH_TIMEOUT_S)},
    ) as agent:
        yield agent


@pytest.fixture
def side_effect_dir(tmp_path: Path) -> Path:
    """A directory where an injected shell command would leave a file."""
    return tmp_path
