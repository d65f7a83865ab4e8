"""Fixtures of the reliability suite: a fresh local stack per test, since tests break it.

Sessions run the recording fake GAM (see :mod:`tests.security.helpers`), so a
test can start long commands, learn their pids and prove none is left over.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from session_runtime.backends.local import LocalBackend
from session_runtime.manager import SessionManager, local_stack_settings
from session_runtime.settings import WebSocketSettings
from tests.security.conftest import SecureStack, require_stack_tools
from tests.security.helpers import recording_gam_bin
from tests.support.local_stack import running_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[SecureStack]:
    """A stack of this test's own (no default session), always taken down."""
    require_stack_tools()
    gam_bin, record = recording_gam_bin(tmp_path / "gam")
    with running_stack(tmp_path / "stack", default_session=False) as local:
        stack_record = local.state.read_stack()
        assert stack_record is not None
        backend = LocalBackend(local.state.root, gam_bin=gam_bin, idle_timeout=0)
        yield SecureStack(local, backend, record, stack_record.proxy_port)


def manager_for(stack: SecureStack, **overrides: object) -> SessionManager:
    """A manager on ``stack``'s backend, URLs taken from the running stack.

    Args:
        stack: the test's stack.
        **overrides: WebSocketSettings fields (``max_sessions=50``, ``connect_timeout=5``).
    """
    settings = WebSocketSettings(
        _env_file=None,
        backend="local",
        local_state_dir=stack.stack.state.root,
        start_timeout=30,
        connect_timeout=5,
        **overrides,  # type: ignore[arg-type]
    )
    return SessionManager(local_stack_settings(settings), stack.backend)


@pytest.fixture
def manager(stack: SecureStack) -> SessionManager:
    return manager_for(stack)
