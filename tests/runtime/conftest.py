"""Fixtures for the runtime tests: one local stack for the run, and managers per backend.

``manager`` and ``manager_factory`` are parametrised over :data:`BACKENDS`, a
registry of small builders. To run every manager test on another backend,
register a builder::

    @register_backend("kubernetes")
    def _kubernetes(request: pytest.FixtureRequest) -> ManagerFactory:
        cluster = request.getfixturevalue("kube_emulator")      # whatever it needs
        return lambda **overrides: SessionManager(load_settings(**overrides), ...)

Each test's sessions are closed afterwards (every session that did not exist
before the test), so tests sharing a stack do not see each other's leftovers.
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
from session_runtime.manager import SessionManager
from session_runtime.models import BackendSession, CreateRequest
from session_runtime.settings import load_settings
from tests.kubernetes.harness import KubeCluster, emulated_cluster
from tests.support.fake_gam import fake_gam_bin
from tests.support.local_stack import running_stack

__all__ = ["BACKENDS", "MakeSession", "ManagerFactory", "StackHandle", "register_backend"]

#: Builds a manager; keyword arguments override settings (``max_sessions=5``).
ManagerFactory = Callable[..., SessionManager]
#: Backend name -> builder of a ManagerFactory for one test.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], ManagerFactory]] = {}


def register_backend(
    name: str,
) -> Callable[
    [Callable[[pytest.FixtureRequest], ManagerFactory]],
    Callable[[pytest.FixtureRequest], ManagerFactory],
]:
    """Register a builder under ``name``; the manager fixtures run once per registered name."""

    def decorate(
        builder: Callable[[pytest.FixtureRequest], ManagerFactory],
    ) -> Callable[[pytest.FixtureRequest], ManagerFactory]:
        BACKENDS[name] = builder
        return builder

    return decorate


@dataclass(frozen=True)
class StackHandle:
    """The runtime tests' local stack: its state directory and proxy."""

    stack: LocalStack
    state_dir: Path
    proxy_url: str


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """A real local stack (nginx, dnsmasq, the default agent) for the whole run; always down."""
    state_dir = tmp_path_factory.mktemp("runtime-stack")
    with running_stack(state_dir) as stack:
        url = stack.proxy_url()
        assert url is not None
        yield StackHandle(stack=stack, state_dir=state_dir, proxy_url=url)


@register_backend("local")
def _local(request: pytest.FixtureRequest) -> ManagerFactory:
    handle: StackHandle = request.getfixturevalue("local_stack")

    def make(**overrides: object) -> SessionManager:
        # No URLs given: from_settings must take them from the running stack.
        settings = load_settings(
            backend="local", local_state_dir=handle.state_dir, start_timeout=60, **overrides
        )
        return SessionManager.from_settings(settings)

    return make


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """An emulated Kubernetes API with a kubelet that runs real agents, for the whole run."""
    with emulated_cluster(tmp_path_factory.mktemp("kube-agents")) as cluster:
        yield cluster


@register_backend("kubernetes")
def _kubernetes(request: pytest.FixtureRequest) -> ManagerFactory:
    cluster: KubeCluster = request.getfixturevalue("kube_cluster")
    return cluster.manager


@pytest.fixture(params=sorted(BACKENDS))
def manager_factory(request: pytest.FixtureRequest) -> Iterator[ManagerFactory]:
    """Makes managers on one backend; closes every session the test created."""
    make = BACKENDS[request.param](request)
    probe = make()
    before = {s.session_id for s in probe.list_sessions()}
    try:
        yield make
    finally:
        for session in probe.list_sessions():
            if session.session_id not in before:
                probe.close_session(session.session_id)


@pytest.fixture
def manager(manager_factory: ManagerFactory) -> SessionManager:
    """A manager with the default settings on each registered backend."""
    return manager_factory()


# --- sessions running the fake GAM (tests/support/fake_gam.py): long, loud, slow on purpose ---
MakeSession = Callable[[str], BackendSession]


@pytest.fixture(scope="module")
def fake_backend(
    local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory
) -> LocalBackend:
    """The runtime stack's backend, its agents running the fake GAM."""
    gam = fake_gam_bin(tmp_path_factory.mktemp("fake-gam"))
    return LocalBackend(local_stack.state_dir, gam_bin=gam, idle_timeout=0)


@pytest.fixture(scope="module")
def make_fake_session(fake_backend: LocalBackend) -> Iterator[MakeSession]:
    """Creates ready fake-GAM sessions (id prefix given); all are closed after the module."""
    created: list[str] = []

    def make(prefix: str) -> BackendSession:
        sid = f"{prefix}-{generate_session_id()[:8]}"
        created.append(sid)
        fake_backend.create(
            CreateRequest(
                session_id=sid,
                token=SecretStr(f"tok-{generate_session_id()}"),
                credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
                max_sessions=50,
            )
        )
        return fake_backend.wait_ready(sid, timeout=30)

    yield make
    for sid in created:
        fake_backend.delete(sid)


@pytest.fixture(scope="module")
def fake_session(make_fake_session: MakeSession) -> BackendSession:
    """One fake-GAM session for the module's tests."""
    return make_fake_session("fake")


@pytest.fixture(scope="session")
def ws_base(local_stack: StackHandle) -> str:
    """``ws://127.0.0.1:<proxy port>`` of the runtime stack."""
    return "ws://" + local_stack.proxy_url.split("://", 1)[1].rstrip("/")
