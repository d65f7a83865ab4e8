"""The Kubernetes backend against a failing API: bounded time, typed errors, nothing orphaned.

The API emulator answers 500 or 429, drops connections or stalls past the
client's timeout - not for a retry or two (the Kubernetes suite covers those)
but for good: at the worst moment (right after the session's Secret was
written), during a close and during the readiness wait. Every call must end
in a typed error within the retry policy's bound (pytest-timeout enforces it),
and once the API recovers, ``reap`` must leave no Pod and no Secret behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from session_runtime.backends.kubernetes import KubernetesBackend, RetryPolicy
from session_runtime.backends.kubernetes.reap import ORPHAN_GRACE_S
from session_runtime.errors import BackendUnavailableError, SessionError, SessionStartError
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import (
    NAMESPACE,
    make_backend,
    request,
    seed_cluster,
    session_secrets,
)
from tests.support.kube_emulator import Fault, KubeEmulator
from tests.support.kubelet import Kubelet

#: Quick give-up: 3 attempts, 0.3 s per request; a stall of 1 s always times out.
QUICK = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=0.3)
#: Generous bound for any one call here (the policy's own bound is a few seconds).
BOUND_S = 30

OUTAGES: dict[str, dict[str, Any]] = {
    "500": {"status": 500, "reason": "InternalError"},
    "429": {
        "status": 429,
        "reason": "TooManyRequests",
        "message": "Too many requests",
        "headers": {"Retry-After": "0"},
    },
    "dropped connections": {"kind": "drop"},
    "slow responses": {"kind": "stall", "seconds": 1.0},
}


def _outage(name: str, **match: Any) -> Fault:
    """A fault that lasts (``times`` far above any retry budget)."""
    return Fault(times=10_000, **OUTAGES[name], **match)


@pytest.fixture
def cluster() -> Iterator[tuple[KubeEmulator, Kubelet]]:
    emulator = KubeEmulator()
    emulator.start()
    kubelet = Kubelet(emulator)
    try:
        seed_cluster(emulator)
        yield emulator, kubelet
    finally:
        kubelet.stop()
        emulator.stop()


@pytest.fixture
def backend(cluster: tuple[KubeEmulator, Kubelet]) -> Iterator[KubernetesBackend]:
    settings = WebSocketSettings(
        _env_file=None,
        backend="kubernetes",
        namespace=NAMESPACE,
        max_sessions=5,
        start_timeout=5,
    )
    impl = make_backend(cluster[0], settings, retry=QUICK)
    try:
        yield impl
    finally:
        impl.close()


def _reap_after_recovery_keeping(emulator: KubeEmulator, outage: str) -> None:
    """Clear every fault and let stalled requests land (as :func:`_reap_after_recovery`)."""
    emulator.clear_faults()
    stall = OUTAGES[outage].get("seconds")
    if isinstance(stall, float):
        time.sleep(stall + 0.5)


def _reap_after_recovery(emulator: KubeEmulator, backend: KubernetesBackend, outage: str) -> None:
    """Clear every fault, reap as the CronJob would later on, and prove nothing is left.

    A stalled request the client gave up on is still carried out by the server
    (as a real API server may): the reap runs once those have landed, so a Pod
    created by a timed-out request is found, expired, and removed with its Secret.
    """
    emulator.clear_faults()
    stall = OUTAGES[outage].get("seconds")
    if isinstance(stall, float):
        time.sleep(stall + 0.5)
    backend.reap(
        idle_timeout=3600,
        max_lifetime=86400,
        now=datetime.now(UTC) + timedelta(seconds=ORPHAN_GRACE_S + 1),
    )
    assert emulator.list("pods", NAMESPACE) == []
    assert session_secrets(emulator) == []


@pytest.mark.timeout(BOUND_S)
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_pod_creation_failing_for_good_is_a_typed_error_and_leaves_no_secret(
    cluster: tuple[KubeEmulator, Kubelet], backend: KubernetesBackend, outage: str
) -> None:
    emulator, _ = cluster
    emulator.inject(_outage(outage, method="POST", path_contains="/pods"))
    with pytest.raises(BackendUnavailableError) as info:
        backend.create(request("doomed"))
    assert str(info.value).startswith("Kubernetes API unavailable")
    assert "t0ken-abc" not in str(info.value)
    assert emulator.list("pods", NAMESPACE) == []
    assert session_secrets(emulator) == []  # the Pod fails first: no Secret is made
    _reap_after_recovery(emulator, backend, outage)


@pytest.mark.timeout(BOUND_S)
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_the_api_going_down_right_after_the_pod_write_recovers_on_the_next_create(
    cluster: tuple[KubeEmulator, Kubelet], backend: KubernetesBackend, outage: str
) -> None:
    emulator, _ = cluster

    def go_down(plural: str, obj: dict[str, Any]) -> None:
        if plural == "pods":
            emulator.inject(_outage(outage))

    emulator.on_create.append(go_down)
    with pytest.raises(BackendUnavailableError):
        backend.create(request("stranded"))
    with pytest.raises(BackendUnavailableError):
        backend.list()
    emulator.on_create.remove(go_down)
    _reap_after_recovery_keeping(emulator, outage)
    # A pod left without its token Secret is not usable: the next create replaces or
    # completes it, and close leaves nothing (the Secret goes with its Pod).
    backend.delete("stranded")
    session = backend.create(request("stranded"))
    assert session.created and session.token.get_secret_value()
    assert backend.delete("stranded") is True
    assert emulator.list("pods", NAMESPACE) == []
    assert session_secrets(emulator) == []


@pytest.mark.timeout(BOUND_S)
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_a_close_during_an_outage_is_a_typed_error_and_completes_after_recovery(
    cluster: tuple[KubeEmulator, Kubelet], backend: KubernetesBackend, outage: str
) -> None:
    emulator, kubelet = cluster
    backend.create(request("closing"))
    kubelet.settle()
    emulator.inject(_outage(outage, method="DELETE"))
    with pytest.raises(BackendUnavailableError):
        backend.delete("closing")
    emulator.clear_faults()
    assert backend.delete("closing")
    _reap_after_recovery(emulator, backend, outage)


@pytest.mark.timeout(BOUND_S)
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_waiting_for_readiness_through_an_outage_ends_in_a_typed_error(
    cluster: tuple[KubeEmulator, Kubelet], backend: KubernetesBackend, outage: str
) -> None:
    emulator, kubelet = cluster
    kubelet.plan("gamgui-session-waiting", "pending")
    session = backend.create(request("waiting"))
    emulator.inject(_outage(outage, method="GET"))
    with pytest.raises(SessionError) as info:
        backend.wait_ready(session.session_id, timeout=3)
    # The API's own failure, or the readiness deadline passing: never a hang or a crash.
    assert isinstance(info.value, BackendUnavailableError | SessionStartError), repr(info.value)
    emulator.clear_faults()
    assert backend.delete("waiting")
    _reap_after_recovery(emulator, backend, outage)
