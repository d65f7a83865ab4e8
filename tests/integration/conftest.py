"""The session-scoped local stack every integration test stands on (always taken down)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.ids import DEFAULT_SESSION_ID, generate_session_id
from session_runtime.models import BackendSession, CreateRequest
from tests.support.local_stack import missing_stack_tools, running_stack

_MISSING = missing_stack_tools()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _MISSING:
        return
    skip = pytest.mark.skip(
        reason=f"needs {' and '.join(_MISSING)} (scripts/bootstrap.sh installs them)"
    )
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A running stack (DNS queries logged, default session up), taken down at the end."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="session")
def proxy_port(local_stack: LocalStack) -> int:
    record = local_stack.state.read_stack()
    assert record is not None
    return record.proxy_port


@pytest.fixture(scope="session")
def proxy_ws_base(proxy_port: int) -> str:
    return f"ws://127.0.0.1:{proxy_port}"


@pytest.fixture(scope="session")
def backend(local_stack: LocalStack) -> LocalBackend:
    return LocalBackend(local_stack.state.root)


@pytest.fixture(scope="session")
def default_token(backend: LocalBackend) -> str:
    session = backend.get(DEFAULT_SESSION_ID)
    assert session is not None
    return session.token.get_secret_value()


SessionFactory = Callable[..., BackendSession]


@pytest.fixture
def new_session(backend: LocalBackend) -> Iterator[SessionFactory]:
    """Create ready sessions on the shared stack; every one is deleted after the test."""
    created: list[str] = []

    def make(session_id: str | None = None, *, command: str | None = None) -> BackendSession:
        sid = session_id or generate_session_id()
        created.append(sid)
        backend.create(
            CreateRequest(
                session_id=sid,
                token=SecretStr(f"tok-{sid}-{generate_session_id()}"),
                command=command,
                credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
                max_sessions=50,
            )
        )
        return backend.wait_ready(sid, timeout=30)

    yield make
    for sid in created:
        backend.delete(sid)
