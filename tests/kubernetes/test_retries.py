"""Transient API failures are retried with bounded backoff; the rest surface typed."""

from __future__ import annotations

import pytest

from session_runtime.backends.kubernetes import KubernetesBackend, RetryPolicy
from session_runtime.backends.kubernetes.api import KubeApi
from session_runtime.errors import BackendError, BackendUnavailableError
from session_runtime.models import SessionStatus
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

PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


def _count(emulator: KubeEmulator, method: str, path: str) -> int:
    return sum(1 for r in emulator.requests if r.method == method and r.path == path)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500, times=2, method="POST", path_contains="/pods"),
        Fault(status=503, reason="ServiceUnavailable", times=1, method="POST",
              path_contains="/pods"),
        Fault(status=429, reason="TooManyRequests", message="Too many requests, retry later",
              times=2, method="POST", path_contains="/pods", headers={"Retry-After": "0"}),
        Fault(kind="drop", times=2, method="POST", path_contains="/pods"),
    ],
    ids=["500", "503", "429", "dropped-connection"],
)  # fmt: skip
def test_transient_failures_on_create_are_retried_until_it_succeeds(
    backend: KubernetesBackend, emulator: KubeEmulator, fault: Fault
) -> None:
    times = fault.times
    emulator.inject(fault)
    session = backend.create(request("alpha"))
    assert session.session_id == "alpha"
    assert _count(emulator, "POST", PODS) == times + 1
    assert len(emulator.list("pods", NAMESPACE)) == 1


def test_a_slow_api_times_out_and_the_retry_succeeds(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    quick = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=0.3)
    backend = make_backend(emulator, settings, retry=quick)
    emulator.inject(Fault(kind="stall", seconds=1.0, times=1, method="GET", path_contains="/pods"))
    try:
        assert backend.get("ghost") is None
    finally:
        backend.close()
    assert _count(emulator, "GET", PODS) == 2  # the list timed out once, then answered


def test_exhausted_retries_raise_backend_unavailable_with_the_api_message(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    emulator.inject(
        Fault(status=500, message="etcdserver: request timed out", times=100, method="GET")
    )
    before = len(emulator.requests)
    with pytest.raises(BackendUnavailableError, match=r"Kubernetes API unavailable") as err:
        backend.list()
    assert "etcdserver: request timed out" in (err.value.cause or "")
    assert "after 4 attempts" in (err.value.cause or "")
    assert len(emulator.requests) - before == 4  # the first list, tried 4 times, then stop


def test_a_refusal_is_not_retried_and_carries_the_api_message(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    message = 'secrets is forbidden: User "system:serviceaccount:x:y" cannot create resource'
    emulator.inject(
        Fault(status=403, reason="Forbidden", message=message, method="POST",
              path_contains="/secrets")
    )  # fmt: skip
    with pytest.raises(BackendError, match="Kubernetes API refused to create Secret") as err:
        backend.create(request("alpha"))
    assert not isinstance(err.value, BackendUnavailableError)
    assert message in (err.value.cause or "")
    assert "Role" in (err.value.hint or "")
    assert _count(emulator, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets") == 1
    assert emulator.list("pods", NAMESPACE) == []


def test_a_failed_pod_create_leaves_no_secret_behind(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    emulator.inject(
        Fault(status=422, reason="Invalid", message="Pod is invalid", method="POST",
              path_contains="/pods")
    )  # fmt: skip
    with pytest.raises(BackendError, match="refused to create Pod") as err:
        backend.create(request("alpha"))
    assert "Pod is invalid" in (err.value.cause or "")
    assert session_secrets(emulator) == []


def test_the_watch_reconnects_after_a_dropped_stream(
    backend: KubernetesBackend, emulator: KubeEmulator, kubelet: Kubelet
) -> None:
    kubelet.wait_for_watch = True  # the pod stays pending until the wait watches it
    backend.create(request("alpha"))
    emulator.inject(Fault(kind="drop", times=1, watch=True, path_contains="/pods"))
    assert backend.wait_ready("alpha", timeout=5).status is SessionStatus.READY
    watches = [r for r in emulator.requests if r.query.get("watch") and r.path == PODS]
    assert len(watches) == 2


def test_an_unreachable_api_is_backend_unavailable(settings: WebSocketSettings) -> None:
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.resources.core_v1 import Pod

    emulator = KubeEmulator()
    emulator.start()
    url_config = emulator.kubeconfig(NAMESPACE)
    emulator.stop()  # nothing listens on that port any more
    api = KubeApi(
        KubeConfig.from_dict(url_config),
        NAMESPACE,
        retry=RetryPolicy(attempts=2, base_delay=0.01, request_timeout=1.0),
        trust_env=False,
    )
    try:
        with pytest.raises(BackendUnavailableError, match="Kubernetes API unavailable") as err:
            api.list(Pod)
    finally:
        api.close()
    assert "after 2 attempts" in (err.value.cause or "")


def test_backoff_doubles_with_jitter_up_to_its_cap_and_bounds_retry_after() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.1, max_delay=0.5)
    for _ in range(50):
        delays = [policy.delay(n) for n in range(1, 6)]
        for delay, floor in zip(delays, [0.1, 0.2, 0.4, 0.5, 0.5], strict=True):
            assert floor <= delay <= min(0.5, floor + 0.1)
        assert 0.3 <= policy.delay(1, retry_after=0.3) <= 0.5
        assert policy.delay(1, retry_after=3600) == 0.5


def test_jitter_spreads_the_retries_of_replicas_that_failed_together() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    assert len({policy.delay(2) for _ in range(20)}) > 1
