"""Get, list, close and reap sessions: the cluster is the only state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from session_runtime import naming, spec
from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.backends.kubernetes.reap import STUCK_FLOOR_S, stuck_after
from session_runtime.errors import BackendError
from session_runtime.models import ReapReason, SessionStatus
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import (
    CREATED_AT,
    NAMESPACE,
    Activity,
    expected_token,
    make_backend,
    request,
    session_secrets,
    template_pod,
)
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet

IDLE = 600.0
LIFETIME = 3600.0


def test_another_replica_gets_the_session_with_its_token_from_the_cluster(
    backend: KubernetesBackend, emulator: KubeEmulator, settings: WebSocketSettings
) -> None:
    backend.create(request("alpha", token="shared-token"))
    other = make_backend(emulator, settings)
    try:
        session = other.get("alpha")
    finally:
        other.close()
    assert session is not None
    # Derived from the key and the pod's uid: no replica reads the session's Secret.
    assert session.token.get_secret_value() == expected_token(emulator, "alpha")


def test_get_of_an_unknown_session_is_none(backend: KubernetesBackend) -> None:
    assert backend.get("ghost") is None


def test_list_returns_every_session_oldest_first_with_status(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    for sid, age in (("newer", 10), ("older", 500)):
        _put_session(emulator, sid, created=CREATED_AT - timedelta(seconds=age), phase="Running")
    sessions = backend.list()
    assert [s.session_id for s in sessions] == ["older", "newer"]
    assert all(s.status is SessionStatus.READY for s in sessions)
    assert all(
        s.token.get_secret_value() == expected_token(emulator, s.session_id) for s in sessions
    )


def test_close_removes_the_pod_and_the_secret(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("alpha"))
    assert backend.delete("alpha") is True
    assert emulator.get("pods", NAMESPACE, naming.session_pod_name("alpha")) is None
    assert emulator.get("secrets", NAMESPACE, naming.session_token_secret_name("alpha")) is None


def test_closing_a_missing_session_is_not_an_error(backend: KubernetesBackend) -> None:
    assert backend.delete("ghost") is False


def test_closing_removes_a_secret_left_without_its_pod(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    emulator.put("secrets", spec.session_token_secret("alpha", NAMESPACE, "tok"))
    assert backend.delete("alpha") is True
    assert session_secrets(emulator) == []


def test_the_default_sessions_deployment_pod_is_found_by_its_label(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    _put_session(
        emulator, "default", ip="10.1.0.9", controller=True, name="gamgui-session-default-7d9-x2"
    )
    session = backend.get("default")
    assert session is not None
    assert session.token.get_secret_value() == "token-default"
    assert session.status is SessionStatus.READY
    writes = len(emulator.writes())
    assert backend.create(request("default")).session_id == "default"
    assert len(emulator.writes()) == writes
    assert backend.wait_ready("default", timeout=1).status is SessionStatus.READY


def test_the_default_session_cannot_be_closed_by_the_runtime(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    _put_session(emulator, "default", controller=True, name="gamgui-session-default-7d9-x2")
    with pytest.raises(BackendError, match="managed by a Deployment") as err:
        backend.delete("default")
    assert "Pulumi" in (err.value.hint or "")
    assert emulator.get("secrets", NAMESPACE, naming.session_token_secret_name("default"))


# --- reap -------------------------------------------------------------------------
def _put_session(
    emulator: KubeEmulator,
    sid: str,
    *,
    created: Any = CREATED_AT,
    phase: str = "Running",
    ready: bool = True,
    ip: str | None = None,
    controller: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Store a session pod (and its Secret) in a given state, as if it had lived a while."""
    pod = spec.stamp_session_pod(
        template_pod(),
        session_id=sid,
        namespace=NAMESPACE,
        command=None,
        credentials_secret=None,
        created_at=created,
    )
    if name is not None:
        pod["metadata"]["name"] = name
    if controller:
        emulator.put(
            "replicasets",
            {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": "rs", "namespace": NAMESPACE, "uid": "u-rs"}},
        )  # fmt: skip
        pod["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-rs",
             "controller": True}
        ]  # fmt: skip
    stored = emulator.put("pods", pod)
    secret = spec.session_token_secret(sid, NAMESPACE, f"token-{sid}")
    secret["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
         "uid": stored["metadata"]["uid"]}
    ]  # fmt: skip
    emulator.put("secrets", secret)
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    status = {"phase": phase, "conditions": conditions, "podIP": ip}
    if phase == "Failed":
        status["reason"] = "DeadlineExceeded"
    return emulator.set_status("pods", NAMESPACE, pod["metadata"]["name"], status)


@pytest.fixture
def crowded(emulator: KubeEmulator, activity: Activity) -> KubeEmulator:
    """A namespace with one session of every kind the reaper must tell apart."""
    now = CREATED_AT.timestamp()
    young = CREATED_AT - timedelta(seconds=60)
    _put_session(emulator, "busy", created=young, ip="10.1.0.1")
    activity.by_address[f"10.1.0.1:{naming.AGENT_PORT}"] = now - 5
    _put_session(emulator, "idle", created=young, ip="10.1.0.2")
    activity.by_address[f"10.1.0.2:{naming.AGENT_PORT}"] = now - IDLE - 100
    _put_session(emulator, "mute", created=young, ip="10.1.0.3")  # agent does not answer
    _put_session(emulator, "starting", created=young, phase="Pending", ready=False)
    _put_session(emulator, "done", created=young, phase="Succeeded", ready=False)
    _put_session(emulator, "crashed", created=young, phase="Failed", ready=False)
    old = CREATED_AT - timedelta(seconds=LIFETIME + 60)
    _put_session(emulator, "ancient", created=old, ip="10.1.0.4")
    activity.by_address[f"10.1.0.4:{naming.AGENT_PORT}"] = now - 1
    _put_session(emulator, "default", created=old, ip="10.1.0.5", controller=True)
    activity.by_address[f"10.1.0.5:{naming.AGENT_PORT}"] = now - IDLE * 10
    orphan = spec.session_token_secret("orphan", NAMESPACE, "x")
    emulator.put("secrets", orphan)
    return emulator


def _reap(backend: KubernetesBackend, *, dry_run: bool, now_offset: float = 0.0) -> dict[str, str]:
    reaped = backend.reap(
        idle_timeout=IDLE,
        max_lifetime=LIFETIME,
        now=CREATED_AT + timedelta(seconds=now_offset),
        dry_run=dry_run,
    )
    assert all(r.removed is (not dry_run) for r in reaped)
    return {r.session_id: r.reason for r in reaped}


def test_reap_chooses_exactly_finished_expired_idle_sessions(
    backend: KubernetesBackend, crowded: KubeEmulator
) -> None:
    reasons = _reap(backend, dry_run=False)
    assert reasons == {
        "idle": "idle for 700s (> 600s)",
        "done": "finished (Succeeded)",
        "crashed": "failed (DeadlineExceeded)",
        "ancient": "outlived its lifetime (3660s > 3600s)",
    }
    left = {
        p["metadata"]["labels"][naming.LABEL_SESSION_ID] for p in crowded.list("pods", NAMESPACE)
    }
    assert left == {"busy", "mute", "starting", "default"}
    secrets = {s["metadata"]["labels"][naming.LABEL_SESSION_ID] for s in session_secrets(crowded)}
    assert secrets <= {"busy", "mute", "starting", "default", "orphan"}


def test_a_pod_pending_long_after_any_create_gave_up_is_reaped_as_failed(
    backend: KubernetesBackend, crowded: KubeEmulator, settings: WebSocketSettings
) -> None:
    after = stuck_after(settings.start_timeout)
    _put_session(
        crowded,
        "stuck",
        created=CREATED_AT - timedelta(seconds=after + 1),
        phase="Pending",
        ready=False,
    )
    reaped = {r.session_id: r for r in backend.reap(
        idle_timeout=IDLE, max_lifetime=LIFETIME, now=CREATED_AT
    )}  # fmt: skip
    assert reaped["stuck"].reason_code is ReapReason.FAILED
    assert reaped["stuck"].reason == f"never started (Pending for {after + 1:.0f}s > {after:.0f}s)"
    assert "starting" not in reaped  # Pending, but younger than that
    left = {
        p["metadata"]["labels"][naming.LABEL_SESSION_ID] for p in crowded.list("pods", NAMESPACE)
    }
    assert "stuck" not in left and "starting" in left


def test_reap_reads_no_secret_at_all(backend: KubernetesBackend, crowded: KubeEmulator) -> None:
    before = len(crowded.requests)
    _reap(backend, dry_run=True)
    assert not [r for r in crowded.requests[before:] if "/secrets" in r.path]


def test_reap_dry_run_reports_the_same_choice_and_removes_nothing(
    backend: KubernetesBackend, crowded: KubeEmulator
) -> None:
    pods_before = len(crowded.list("pods", NAMESPACE))
    writes = len(crowded.writes())
    reasons = _reap(backend, dry_run=True)
    assert set(reasons) == {"idle", "done", "crashed", "ancient"}
    assert len(crowded.list("pods", NAMESPACE)) == pods_before
    assert len(crowded.writes()) == writes


def test_reap_asks_only_ready_agents_for_their_activity(
    backend: KubernetesBackend, crowded: KubeEmulator, activity: Activity
) -> None:
    _reap(backend, dry_run=True)
    asked = {a.split(":")[0] for a in activity.asked}
    assert asked == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def test_reaped_sessions_are_gone_for_every_replica(
    backend: KubernetesBackend, crowded: KubeEmulator, settings: WebSocketSettings, kubelet: Kubelet
) -> None:
    _reap(backend, dry_run=False)
    other = make_backend(crowded, settings)
    try:
        assert other.get("idle") is None
        assert {s.session_id for s in other.list()} == {"busy", "mute", "starting", "default"}
    finally:
        other.close()


def test_an_id_closed_a_moment_ago_can_be_created_again_once_its_pod_is_gone(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    emulator.pod_grace_s = 0.3
    first = backend.create(request("again", token="old-token"))
    old_uid = emulator.get("pods", NAMESPACE, naming.session_pod_name("again"))["metadata"]["uid"]  # type: ignore[index]
    assert backend.delete("again") is True
    closing = backend.get("again")
    assert closing is not None and closing.status is SessionStatus.TERMINATING
    second = backend.create(request("again", token="new-token"))
    assert second.token.get_secret_value() == expected_token(emulator, "again")
    assert second.token.get_secret_value() != first.token.get_secret_value()
    pod = emulator.get("pods", NAMESPACE, naming.session_pod_name("again"))
    assert pod is not None and pod["metadata"]["uid"] != old_uid
    assert "deletionTimestamp" not in pod["metadata"]


def test_pending_is_given_up_on_after_twice_the_start_timeout_never_before_the_floor() -> None:
    assert stuck_after(5) == STUCK_FLOOR_S  # a short reaper timeout cannot undercut a server
    assert stuck_after(STUCK_FLOOR_S) == 2 * STUCK_FLOOR_S
