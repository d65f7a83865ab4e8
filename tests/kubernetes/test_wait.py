"""Waiting for a session: watch to Ready, fail fast with the reason, progress in order."""

from __future__ import annotations

import threading

import pytest

from session_runtime import naming
from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.errors import SessionNotFoundError, SessionStartError
from session_runtime.models import ProgressEvent, SessionStatus
from tests.kubernetes.conftest import NAMESPACE, request
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet


def test_wait_returns_the_ready_session_with_the_agent_address(
    backend: KubernetesBackend, kubelet: Kubelet
) -> None:
    backend.create(request("alpha"))
    session = backend.wait_ready("alpha", timeout=5)
    assert session.status is SessionStatus.READY
    assert session.agent_address is not None
    assert session.agent_address.endswith(f":{naming.AGENT_PORT}")


def test_progress_reports_conditions_and_events_in_the_order_they_happen(
    backend: KubernetesBackend, kubelet: Kubelet
) -> None:
    kubelet.wait_for_watch = True
    seen: list[ProgressEvent] = []
    backend.create(request("alpha"), progress=seen.append)
    backend.wait_ready("alpha", timeout=5, progress=seen.append)
    assert seen[0].phase == "created"
    assert seen[-1].phase == "ready"
    reasons = [e.message.split(":")[0] for e in seen if e.phase == "event"]
    assert reasons == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    lines = [e.message for e in seen if e.phase == "pod"]
    assert lines.index("PodScheduled=True") < lines.index("container agent: ContainerCreating")
    assert lines.index("container agent: ContainerCreating") < lines.index("Ready=True")
    assert all(e.session_id == "alpha" for e in seen)


@pytest.mark.parametrize(
    ("outcome", "cause"),
    [
        ("ImagePullBackOff", "ImagePullBackOff: Back-off pulling image"),
        ("ErrImagePull", "ErrImagePull: failed to pull image"),
        ("CrashLoopBackOff", "CrashLoopBackOff: back-off 10s restarting"),
        ("CreateContainerConfigError", 'CreateContainerConfigError: secret "gam-credentials"'),
        ("Unschedulable", "Unschedulable: 0/3 nodes are available"),
        ("Failed", "Error: container agent exited with code 1"),
    ],
)
def test_wait_fails_fast_with_the_reason(
    backend: KubernetesBackend, kubelet: Kubelet, outcome: str, cause: str
) -> None:
    kubelet.plan(naming.session_pod_name("alpha"), outcome)
    seen: list[ProgressEvent] = []
    backend.create(request("alpha"))
    with pytest.raises(SessionStartError, match="session alpha failed to start") as err:
        backend.wait_ready("alpha", timeout=30, progress=seen.append)
    assert str(err.value).startswith("Error joining session")
    assert (err.value.cause or "").startswith(cause)
    assert err.value.hint
    assert seen and seen[-1].phase in ("event", "pod")


def test_wait_gives_up_at_the_deadline_with_the_last_state(
    backend: KubernetesBackend, kubelet: Kubelet
) -> None:
    kubelet.plan(naming.session_pod_name("alpha"), "pending")
    backend.create(request("alpha"))
    with pytest.raises(SessionStartError, match=r"did not become ready within 0.5s") as err:
        backend.wait_ready("alpha", timeout=0.5)
    assert err.value.cause == "no status reported yet"


def test_wait_for_an_unknown_session_is_not_found(backend: KubernetesBackend) -> None:
    with pytest.raises(SessionNotFoundError, match="session ghost does not exist"):
        backend.wait_ready("ghost", timeout=1)


def test_a_pod_deleted_while_waiting_ends_the_wait(
    backend: KubernetesBackend, kubelet: Kubelet, emulator: KubeEmulator
) -> None:
    kubelet.plan(naming.session_pod_name("alpha"), "pending")
    backend.create(request("alpha"))

    def delete_once_watched() -> None:
        kubelet.wait_for_watch = True
        if kubelet._watched(naming.session_pod_name("alpha")):
            emulator.remove("pods", NAMESPACE, naming.session_pod_name("alpha"))

    deleter = threading.Thread(target=delete_once_watched)
    deleter.start()
    try:
        with pytest.raises(SessionStartError, match="was deleted while starting"):
            backend.wait_ready("alpha", timeout=10)
    finally:
        deleter.join(timeout=10)


def test_wait_can_be_called_from_inside_a_running_event_loop(
    backend: KubernetesBackend, kubelet: Kubelet
) -> None:
    import asyncio

    backend.create(request("alpha"))

    async def inside_loop() -> SessionStatus:
        return backend.wait_ready("alpha", timeout=5).status

    assert asyncio.run(inside_loop()) is SessionStatus.READY
