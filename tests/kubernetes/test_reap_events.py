"""Every reaped pod says why: a reason code, an Event on the pod before it goes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from lightkube.resources.core_v1 import Event

from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.backends.kubernetes.reap import REAP_EVENT_REASON
from session_runtime.errors import BackendError
from session_runtime.models import ReapReason
from tests.kubernetes.conftest import CREATED_AT, NAMESPACE
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
