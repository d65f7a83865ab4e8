"""A stand-in kubelet for the API emulator: moves session pods through their lives.

When a pod is created, the kubelet looks up the pod's planned outcome (by pod
name, else the default) and, on its own thread, walks the pod through the
states a real node shows — scheduled, ContainerCreating, then Running/Ready or
a failure reason — writing the pod status and the Events a real cluster would
emit, a few milliseconds apart so watches see them in order.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.support.kube_emulator import KubeEmulator

__all__ = ["OUTCOMES", "Kubelet"]

#: Every outcome a plan may name.
OUTCOMES = (
    "ready",
    "pending",
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "Unschedulable",
    "Failed",
    "Succeeded",
)
_STEP_S = 0.01


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(kind: str, status: bool, reason: str | None = None, message: str | None = None) -> dict:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": _now(),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


class Kubelet:
    """Plays the node for every pod the emulator creates.

    Args:
        emulator: the API emulator to watch and write to.
        default: the outcome for pods without a plan.
    """

    def __init__(self, emulator: KubeEmulator, default: str = "ready") -> None:
        self.emulator = emulator
        self.default = default
        self.plans: dict[str, str] = {}
        #: When True, a pod's walk starts only once someone watches its Events
        #: (so a waiter sees every step live, in order).
        self.wait_for_watch = False
        self._ips = itertools.count(10)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        emulator.on_create.append(self._created)

    def plan(self, pod_name: str, outcome: str) -> None:
        """Make the pod called ``pod_name`` end in ``outcome`` (one of OUTCOMES)."""
        assert outcome in OUTCOMES, outcome
        self.plans[pod_name] = outcome

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every walk started so far has finished."""
        for thread in list(self._threads):
            thread.join(timeout=timeout)

    def stop(self) -> None:
        """Stop acting and wait for running walks to end."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _created(self, plural: str, obj: dict[str, Any]) -> None:
        if plural != "pods":
            return
        outcome = self.plans.get(obj["metadata"]["name"], self.default)
        thread = threading.Thread(target=self.walk, args=(obj, outcome), daemon=True)
        self._threads.append(thread)
        thread.start()

    # --- the walk ------------------------------------------------------------
    def event(self, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        """Emit an Event about ``pod`` (as the scheduler or kubelet would)."""
        meta = pod["metadata"]
        self.emulator.put(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "firstTimestamp": _now(),
                "lastTimestamp": _now(),
                "count": 1,
            },
        )

    def set_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        """Replace the pod's status; False when the pod is gone."""
        meta = pod["metadata"]
        if self._stop.is_set():
            return False
        try:
            self.emulator.set_status("pods", meta["namespace"], meta["name"], status)
        except KeyError:
            return False
        time.sleep(_STEP_S)
        return True

    def walk(self, pod: dict[str, Any], outcome: str) -> None:
        """Drive ``pod`` to ``outcome``, emitting conditions and Events in order."""
        name = pod["metadata"]["name"]
        if self.wait_for_watch and not self._watched(name):
            return
        container = (pod.get("spec", {}).get("containers") or [{"name": "agent"}])[0]
        image = container.get("image", "image")
        if outcome == "pending":
            return
        if outcome == "Unschedulable":
            message = "0/3 nodes are available: 3 Insufficient cpu."
            self.event(pod, "FailedScheduling", message, "Warning")
            cond = _cond("PodScheduled", False, "Unschedulable", message)
            self.set_status(pod, {"phase": "Pending", "conditions": [cond]})
            return
        scheduled = [_cond("PodScheduled", True)]
        self.event(pod, "Scheduled", f"Successfully assigned {name} to node-1")
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        base = {"phase": "Pending", "hostIP": "192.0.2.1"}
        if not self.set_status(
            pod,
            {
                **base,
                "conditions": [*scheduled, _cond("Initialized", True)],
                "containerStatuses": [self._container(container, waiting)],
            },
        ):
            return
        self.event(pod, "Pulling", f'Pulling image "{image}"')
        failures = {
            "ImagePullBackOff": (f'Back-off pulling image "{image}"', "Failed"),
            "ErrImagePull": (f'failed to pull image "{image}": not found', "Failed"),
            "CreateContainerConfigError": ('secret "gam-credentials" not found', "Failed"),
            "CrashLoopBackOff": (
                f"back-off 10s restarting failed container={container['name']}",
                "BackOff",
            ),
        }
        if outcome in failures:
            message, event_reason = failures[outcome]
            self.event(pod, event_reason, message, "Warning")
            state = {"waiting": {"reason": outcome, "message": message}}
            self.set_status(
                pod,
                {
                    **base,
                    "conditions": [*scheduled, _cond("Initialized", True)],
                    "containerStatuses": [self._container(container, state)],
                },
            )
            return
        self.event(pod, "Pulled", f'Successfully pulled image "{image}"')
        self.event(pod, "Created", f"Created container {container['name']}")
        self.event(pod, "Started", f"Started container {container['name']}")
        if outcome in ("Failed", "Succeeded"):
            code = 1 if outcome == "Failed" else 0
            reason = "Error" if code else "Completed"
            state = {"terminated": {"exitCode": code, "reason": reason}}
            self.set_status(
                pod,
                {
                    **base,
                    "phase": outcome,
                    "reason": "Error" if code else None,
                    "message": "container agent exited with code 1" if code else None,
                    "conditions": [*scheduled, _cond("Ready", False, "PodCompleted")],
                    "containerStatuses": [self._container(container, state)],
                },
            )
            return
        ip = f"10.0.0.{next(self._ips)}"
        self.set_status(
            pod,
            {
                **base,
                "phase": "Running",
                "podIP": ip,
                "startTime": _now(),
                "conditions": [
                    *scheduled,
                    _cond("Initialized", True),
                    _cond("ContainersReady", True),
                    _cond("Ready", True),
                ],
                "containerStatuses": [
                    self._container(container, {"running": {"startedAt": _now()}}, ready=True)
                ],
            },
        )

    def _watched(self, pod_name: str, limit_s: float = 5.0) -> bool:
        """Wait (briefly) until a watch of this pod's Events has been requested."""
        selector = f"involvedObject.name={pod_name}"
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if any(
                r.query.get("watch") == "true" and r.query.get("fieldSelector") == selector
                for r in list(self.emulator.requests)
            ):
                time.sleep(_STEP_S * 5)  # let the pod watch open too
                return True
            time.sleep(_STEP_S)
        return False

    @staticmethod
    def _container(
        container: dict[str, Any], state: dict[str, Any], ready: bool = False
    ) -> dict[str, Any]:
        return {
            "name": container.get("name", "agent"),
            "image": container.get("image", "image"),
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "state": state,
        }
