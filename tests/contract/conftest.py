"""One driver per backend: the contract suite runs unchanged on the fake, local and Kubernetes ones.

A driver owns a backend and can push one of its sessions into the states a
session reaches by itself (finished: the agent exited cleanly, e.g. its idle
timeout; failed: it crashed) or by a close in progress (terminating), the way
the real thing gets there: the emulator's kubelet writes the pod phase, the
local stack's agent process is signalled, the fake flips its record.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.base import SessionBackend
from session_runtime.backends.local import LocalBackend
from session_runtime.backends.local.processes import is_alive
from session_runtime.models import CreateRequest, SessionStatus
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import NAMESPACE, make_backend, seed_cluster
from tests.runtime.fakes import FakeBackend
from tests.support.fake_gam import fake_gam_bin
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet
from tests.support.local_stack import running_stack

BACKENDS = ("fake", "local", "kubernetes")


class Driver:
    """Moves a backend's sessions into states; ``name`` is the backend's."""

    name: str
    backend: SessionBackend
    #: Whether a session can be seen terminating (a local close is synchronous).
    has_terminating = True

    def finish(self, session_id: str) -> None:
        """Make the session end cleanly by itself (idle timeout)."""
        raise NotImplementedError

    def fail(self, session_id: str) -> None:
        """Make the session crash."""
        raise NotImplementedError

    def start_closing(self, session_id: str) -> None:
        """Start a close that takes a moment (the pod's grace period)."""
        raise NotImplementedError


class FakeDriver(Driver):
    name = "fake"

    def __init__(self) -> None:
        self.fake = FakeBackend()
        self.backend = self.fake

    def _set(self, session_id: str, status: SessionStatus) -> None:
        current = self.fake.sessions[session_id]
        self.fake.sessions[session_id] = current.model_copy(update={"status": status})

    def finish(self, session_id: str) -> None:
        self._set(session_id, SessionStatus.FINISHED)

    def fail(self, session_id: str) -> None:
        self._set(session_id, SessionStatus.FAILED)

    def start_closing(self, session_id: str) -> None:
        self._set(session_id, SessionStatus.TERMINATING)


class KubeDriver(Driver):
    name = "kubernetes"

    def __init__(self, emulator: KubeEmulator, settings: WebSocketSettings) -> None:
        self.emulator = emulator
        self.backend = make_backend(emulator, settings)

    def _phase(self, session_id: str, phase: str, reason: str) -> None:
        name = naming.session_pod_name(session_id)
        pod = self.emulator.get("pods", NAMESPACE, name)
        assert pod is not None
        status: dict[str, Any] = dict(pod.get("status") or {})
        status.update(phase=phase, reason=reason, conditions=[{"type": "Ready", "status": "False"}])
        self.emulator.set_status("pods", NAMESPACE, name, status)

    def finish(self, session_id: str) -> None:
        self._phase(session_id, "Succeeded", "Completed")

    def fail(self, session_id: str) -> None:
        self._phase(session_id, "Failed", "Error")

    def start_closing(self, session_id: str) -> None:
        self.emulator.pod_grace_s = 0.3
        self.backend.delete(session_id)


class LocalDriver(Driver):
    name = "local"
    has_terminating = False

    def __init__(self, backend: LocalBackend) -> None:
        self.local = backend
        self.backend = backend

    def _signal(self, session_id: str, sig: signal.Signals) -> None:
        record = self.local.state.read_session(session_id)
        assert record is not None
        os.kill(record.process.pid, sig)
        deadline = time.monotonic() + 10
        while is_alive(record.process):  # wait for the condition: the agent is gone
            assert time.monotonic() < deadline, "the agent did not exit"
            time.sleep(0.02)

    def finish(self, session_id: str) -> None:
        self._signal(session_id, signal.SIGTERM)  # a clean stop, as after its idle timeout

    def fail(self, session_id: str) -> None:
        self._signal(session_id, signal.SIGKILL)

    def start_closing(self, session_id: str) -> None:
        pytest.skip("a local close is synchronous: no session is ever seen terminating")


@pytest.fixture(scope="module")
def local_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    from tests.integration.conftest import _MISSING

    if _MISSING:
        pytest.skip(f"needs {' and '.join(_MISSING)} (scripts/bootstrap.sh installs them)")
    state = tmp_path_factory.mktemp("contract-stack")
    with running_stack(state):
        yield LocalBackend(state, gam_bin=fake_gam_bin(Path(state)))


@pytest.fixture(params=BACKENDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    if request.param == "fake":
        yield FakeDriver()
        return
    if request.param == "local":
        local: LocalBackend = request.getfixturevalue("local_backend")
        made = LocalDriver(local)
        yield made
        for session in local.list():
            if session.session_id != "default":
                local.delete(session.session_id)
        return
    emulator = KubeEmulator()
    emulator.start()
    kubelet = Kubelet(emulator)
    settings = WebSocketSettings(
        _env_file=None,  # type: ignore[call-arg]
        backend="kubernetes",
        namespace=NAMESPACE,
        max_sessions=3,
        start_timeout=5,
    )
    seed_cluster(emulator)
    kube = KubeDriver(emulator, settings)
    try:
        yield kube
    finally:
        kube.backend.close()  # type: ignore[attr-defined]
        kubelet.stop()
        emulator.stop()


def create_request(session_id: str, *, max_sessions: int = 3) -> CreateRequest:
    """A create request as the manager builds it (a fresh token each time)."""
    return CreateRequest(
        session_id=session_id,
        token=SecretStr(f"tok-{session_id}-{time.monotonic_ns()}"),
        credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
        max_sessions=max_sessions,
    )
