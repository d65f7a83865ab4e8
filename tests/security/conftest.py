"""Fixtures of the security suite: one local stack whose sessions run a recording fake GAM.

The hypothesis budget of the routing properties is raised with the environment
variable ``GAMGUI_HYPOTHESIS_EXAMPLES`` (an option added from this non-root
conftest would be unknown when pytest runs from the repository root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.ids import generate_session_id
from session_runtime.models import BackendSession, CreateRequest
from tests.security.helpers import recording_gam_bin
from tests.support.local_stack import missing_stack_tools, running_stack

__all__ = ["SecureStack", "SessionMaker", "create_ready", "require_stack_tools"]


def require_stack_tools() -> None:
    """Skip the calling test when nginx or dnsmasq is not installed."""
    missing = missing_stack_tools()
    if missing:
        pytest.skip(f"needs {missing[0]} (scripts/bootstrap.sh installs it)")


@dataclass(frozen=True)
class SecureStack:
    """A running stack, a backend whose agents run the recording GAM, and the record."""

    stack: LocalStack
    backend: LocalBackend
    record: Path
    proxy_port: int

    @property
    def ws_base(self) -> str:
        """``ws://127.0.0.1:<proxy port>``."""
        return f"ws://127.0.0.1:{self.proxy_port}"

    def url(self, session_id: str) -> str:
        """The session's WebSocket URL through the proxy."""
        return self.ws_base + naming.session_path(session_id)


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """One stack for the security suite (DNS queries logged), always taken down."""
    require_stack_tools()
    root = tmp_path_factory.mktemp("security")
    gam_bin, record = recording_gam_bin(root / "gam")
    with running_stack(root / "stack") as stack:
        record_ = stack.state.read_stack()
        assert record_ is not None
        backend = LocalBackend(stack.state.root, gam_bin=gam_bin, idle_timeout=0)
        yield SecureStack(stack, backend, record, record_.proxy_port)


SessionMaker = Callable[..., BackendSession]


@pytest.fixture
def gam_record(secure_stack: SecureStack) -> Path:
    """The recording GAM's file, emptied for this test."""
    secure_stack.record.write_text("", encoding="utf-8")
    return secure_stack.record


def create_ready(
    secure_stack: SecureStack, session_id: str | None = None, *, token: str | None = None
) -> BackendSession:
    """Create a session running the recording GAM and wait until its agent answers.

    Args:
        secure_stack: the suite's stack.
        session_id: the id; a fresh one when None.
        token: the token; a fresh random one when None.
    """
    sid = session_id or generate_session_id()
    secure_stack.backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr(token or f"tok-{generate_session_id()}-{generate_session_id()}"),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    return secure_stack.backend.wait_ready(sid, timeout=30)


@pytest.fixture
def make_session(secure_stack: SecureStack) -> Iterator[SessionMaker]:
    """Create ready sessions (recording GAM); every one is closed after the test."""
    created: list[str] = []

    def make(session_id: str | None = None, *, token: str | None = None) -> BackendSession:
        created.append(session_id or generate_session_id())
        return create_ready(secure_stack, created[-1], token=token)

    yield make
    for sid in created:
        secure_stack.backend.delete(sid)
