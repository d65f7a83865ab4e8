"""Every reaped pod says why: a reason code, an Event on the pod before it goes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Event

from session_runtime import naming
from session_runtime.akubernetes import AsyncKubernetesBackend
from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.backends.kubernetes.reap import REAP_EVENT_REASON
from session_runtime.errors import BackendError
from session_runtime.models import ReapedSession, ReapReason
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import (
    CREATED_AT,
    FAST_RETRY,
    NAMESPACE,
    RUNTIME_SERVICE_ACCOUNT,
    Activity,
)
from tests.kubernetes.test_lifecycle import IDLE, LIFETIME, crowded  # noqa: F401 - fixture
from tests.support.kube_emulator import KubeEmulator


def _reap(backend: KubernetesBackend, *, dry_run: bool = False) -> dict[str, object]:
    reaped = backend.reap(idle_timeout=IDLE, max_lifetime=LIFETIME, now=CREATED_AT, dry_run=dry_run)
    return {r.session_id: r for r in reaped}


def test_each_reaped_session_carries_its_reason_code_and_idle_since(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
) -> None:
    reaped = _reap(backend)
    codes = {sid: r.reason_code for sid, r in reaped.items()}  # type: ignore[attr-defined]
    assert codes == {
        "idle": ReapReason.IDLE,
        "done": ReapReason.FINISHED,
        "crashed": ReapReason.FAILED,
        "ancient": ReapReason.LIFETIME_EXCEEDED,
    }
    idle = reaped["idle"]
    assert idle.idle_since == CREATED_AT - timedelta(seconds=IDLE + 100)  # type: ignore[attr-defined]
    assert all(r.idle_since is None for s, r in reaped.items() if s != "idle")  # type: ignore[attr-defined]


def test_an_event_on_each_pod_says_why_it_was_reaped(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
) -> None:
    _reap(backend)
    events = [e for e in crowded.list("events", NAMESPACE) if e.get("reason") == REAP_EVENT_REASON]
    by_pod = {e["involvedObject"]["name"]: e for e in events}
    assert set(by_pod) == {
        f"gamgui-session-{sid}" for sid in ("idle", "done", "crashed", "ancient")
    }
    idle = by_pod["gamgui-session-idle"]
    assert idle["involvedObject"]["kind"] == "Pod"
    assert idle["type"] == "Normal"
    assert idle["message"].startswith("reaped (idle): idle for 700s")
    assert by_pod["gamgui-session-ancient"]["message"].startswith("reaped (lifetime_exceeded)")


def test_a_dry_run_records_no_event(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
) -> None:
    _reap(backend, dry_run=True)
    assert not [
        e for e in crowded.list("events", NAMESPACE) if e.get("reason") == REAP_EVENT_REASON
    ]


def test_a_refused_event_does_not_stop_the_reap(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_create = backend.api.create

    def create(obj: Any) -> Any:
        if isinstance(obj, Event):
            raise BackendError("events are forbidden", cause="HTTP 403")
        return real_create(obj)

    monkeypatch.setattr(backend.api, "create", create)
    reaped = _reap(backend)
    assert set(reaped) == {"idle", "done", "crashed", "ancient"}
    assert all(r.removed for r in reaped.values())  # type: ignore[attr-defined]


def _agent_restarted(emulator: KubeEmulator, pod_name: str, exit_code: int) -> None:
    """Give a stored pod the status of an agent container that restarted after ``exit_code``."""
    stored = next(p for p in emulator.list("pods", NAMESPACE) if p["metadata"]["name"] == pod_name)
    status = dict(stored.get("status") or {})
    status["containerStatuses"] = [
        {
            "name": naming.SESSION_CONTAINER_NAME,
            "image": "gamgui-session:test",
            "imageID": "",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
        }
    ]
    emulator.set_status("pods", NAMESPACE, pod_name, status)


@pytest.mark.parametrize(
    ("exit_code", "replaced"), [(naming.AGENT_EXIT_TOKEN_SPENT, True), (137, False)]
)
def test_a_default_pod_whose_agent_restarted_with_its_token_spent_is_replaced(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
    exit_code: int,
    replaced: bool,
) -> None:
    default_pod = naming.session_pod_name("default")
    _agent_restarted(crowded, default_pod, exit_code)
    reaped = _reap(backend)
    names = {p["metadata"]["name"] for p in crowded.list("pods", NAMESPACE)}
    if not replaced:  # an OOM kill alone: the next start tells (with the spent code)
        assert "default" not in reaped and default_pod in names
        return
    default = reaped["default"]
    assert default.reason_code is ReapReason.RESTARTED  # type: ignore[attr-defined]
    assert default.removed  # type: ignore[attr-defined]
    assert default_pod not in names  # the pod only: its Deployment starts a fresh one
    events = [e for e in crowded.list("events", NAMESPACE) if e.get("reason") == REAP_EVENT_REASON]
    assert any(e["involvedObject"]["name"] == default_pod and "(restarted)" in e["message"]
               for e in events)  # fmt: skip


def test_the_async_backend_replaces_the_same_pod(
    backend: KubernetesBackend,
    crowded: KubeEmulator,  # noqa: F811 - the fixture
    settings: WebSocketSettings,
    activity: Activity,
) -> None:
    default_pod = naming.session_pod_name("default")
    _agent_restarted(crowded, default_pod, naming.AGENT_EXIT_TOKEN_SPENT)
    token = crowded.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)

    async def scenario() -> dict[str, ReapedSession]:
        async_backend = AsyncKubernetesBackend(
            settings,
            config=KubeConfig.from_dict(crowded.kubeconfig(NAMESPACE, token)),
            retry=FAST_RETRY,
            activity_probe=activity,
            trust_env=False,
        )
        try:
            reaped = await async_backend.reap(
                idle_timeout=IDLE, max_lifetime=LIFETIME, now=CREATED_AT
            )
        finally:
            await async_backend.aclose()
        return {r.session_id: r for r in reaped}

    reaped = asyncio.run(scenario())
    assert set(reaped) == {"idle", "done", "crashed", "ancient", "default"}
    assert reaped["default"].reason_code is ReapReason.RESTARTED and reaped["default"].removed
    assert default_pod not in {p["metadata"]["name"] for p in crowded.list("pods", NAMESPACE)}
