"""A stand-in kubelet for the API emulator: moves session pods through their lives.

When a pod is created, the kubelet looks up the pod's planned outcome (by pod
name, else the default) and, on its own thread, walks the pod through the
states a real node shows — scheduled, ContainerCreating, then Running/Ready or
a failure reason — writing the pod status and the Events a real cluster would
emit, a few milliseconds apart so watches see them in order.

Given ``agents_dir``, a pod that becomes Ready runs for real: the kubelet starts
a session agent process on loopback with the token from the session's Secret
(as the pod would mount it) and stops it when the pod is deleted. Tests reach
it through :meth:`Kubelet.agent_url`, standing in for the proxy and cluster DNS.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from session_runtime import naming
from tests.support.agents import RunningAgent, start_agent
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
#: Waiting reasons a container can be stuck in: (message template, Event reason).
_WAITING_FAILURES = {
    "ImagePullBackOff": ('Back-off pulling image "{image}"', "Failed"),
    "ErrImagePull": ('failed to pull image "{image}": not found', "Failed"),
    "CreateContainerConfigError": ('secret "gam-credentials" not found', "Failed"),
    "CrashLoopBackOff": ("back-off 10s restarting failed container={name}", "BackOff"),
}


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
        agents_dir: when given, Ready pods run a real agent process (logs go here).
        gam_bin: the GAM those agents run (default: the real gam7).
    """

    def __init__(
        self,
        emulator: KubeEmulator,
        default: str = "ready",
        agents_dir: Path | None = None,
        gam_bin: str | None = None,
    ) -> None:
        self.emulator = emulator
        self.default = default
        self.agents_dir = agents_dir
        self.gam_bin = gam_bin
        self.agents: dict[str, RunningAgent] = {}
        self._agents_lock = threading.Lock()
        self.plans: dict[str, str] = {}
        #: When True, a pod's walk starts only once someone watches its Events
        #: (so a waiter sees every step live, in order).
        self.wait_for_watch = False
        self._ips = itertools.count(10)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        emulator.on_create.append(self._created)
        emulator.on_delete.append(self._deleted)

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
            thread.join(timeout=30)
        with self._agents_lock:
            agents, self.agents = list(self.agents.values()), {}
        for agent in agents:
            agent.stop()

    def agent_url(self, session_id: str) -> str:
        """Return the WebSocket URL of a session's running agent (KeyError if none)."""
        return self.agents[session_id].url

    def _deleted(self, plural: str, obj: dict[str, Any]) -> None:
        if plural != "pods":
            return
        sid = (obj["metadata"].get("labels") or {}).get(naming.LABEL_SESSION_ID)
        with self._agents_lock:
            agent = self.agents.pop(sid, None) if sid else None
        if agent is not None:
            agent.stop()

    def _start_agent(self, pod: dict[str, Any]) -> bool:
        """Run the pod's agent with the token from its Secret; False if it cannot start."""
        assert self.agents_dir is not None
        meta = pod["metadata"]
        sid = (meta.get("labels") or {}).get(naming.LABEL_SESSION_ID)
        secret = self._mounted_secret(
            meta["namespace"], naming.session_token_secret_name(sid or "x")
        )
        if sid is None or secret is None:
            return False
        token = base64.b64decode(secret["data"][naming.TOKEN_SECRET_KEY]).decode()
        agent = start_agent(sid, token, tmp_path=self.agents_dir, gam_bin=self.gam_bin)
        with self._agents_lock:
            stale = self.agents.pop(sid, None)
            self.agents[sid] = agent
        if stale is not None:
            stale.stop()
        return True

    def _mounted_secret(
        self, namespace: str, name: str, limit_s: float = 10.0
    ) -> dict[str, Any] | None:
        """Wait for the token Secret the pod mounts, as a kubelet retries the volume mount.

        The runtime creates the Pod first and its Secret right after, so the
        Secret may not exist yet when the pod is scheduled.
        """
        deadline = time.monotonic() + limit_s
        while not self._stop.is_set():
            secret = self.emulator.get("secrets", namespace, name)
            if secret is not None or time.monotonic() >= deadline:
                return secret
            time.sleep(_STEP_S)
        return None

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
        if outcome == "pending" or (self.wait_for_watch and not self._watched(name)):
            return
        if outcome == "Unschedulable":
            message = "0/3 nodes are available: 3 Insufficient cpu."
            self.event(pod, "FailedScheduling", message, "Warning")
            cond = _cond("PodScheduled", False, "Unschedulable", message)
            self.set_status(pod, {"phase": "Pending", "conditions": [cond]})
            return
        container = (pod.get("spec", {}).get("containers") or [{"name": "agent"}])[0]
        self.event(pod, "Scheduled", f"Successfully assigned {name} to node-1")
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        if not self.set_status(pod, self._pending(container, waiting)):
            return
        self.event(pod, "Pulling", f'Pulling image "{container.get("image")}"')
        if outcome in _WAITING_FAILURES:
            self._fail_waiting(pod, container, outcome)
        elif outcome in ("Failed", "Succeeded"):
            self._started(pod, container)
            self._terminate(pod, container, outcome)
        else:
            self._started(pod, container)
            self._run(pod, container)

    def _pending(self, container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "hostIP": "192.0.2.1",
            "conditions": [_cond("PodScheduled", True), _cond("Initialized", True)],
            "containerStatuses": [self._container(container, state)],
        }

    def _fail_waiting(self, pod: dict[str, Any], container: dict[str, Any], outcome: str) -> None:
        template, event_reason = _WAITING_FAILURES[outcome]
        message = template.format(image=container.get("image"), name=container.get("name"))
        self.event(pod, event_reason, message, "Warning")
        state = {"waiting": {"reason": outcome, "message": message}}
        self.set_status(pod, self._pending(container, state))

    def _started(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        self.event(pod, "Pulled", f'Successfully pulled image "{container.get("image")}"')
        self.event(pod, "Created", f"Created container {container.get('name')}")
        self.event(pod, "Started", f"Started container {container.get('name')}")

    def _terminate(self, pod: dict[str, Any], container: dict[str, Any], outcome: str) -> None:
        code = 1 if outcome == "Failed" else 0
        state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
        status = self._pending(container, state)
        status.update(
            phase=outcome,
            reason="Error" if code else None,
            message=f"container {container.get('name')} exited with code 1" if code else None,
            conditions=[_cond("PodScheduled", True), _cond("Ready", False, "PodCompleted")],
        )
        self.set_status(pod, status)

    def _run(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        ip = f"10.0.0.{next(self._ips)}"
        if self.agents_dir is not None:
            if not self._start_agent(pod):
                return
            ip = "127.0.0.1"
        running = {"running": {"startedAt": _now()}}
        status = self._pending(container, running)
        status.update(
            phase="Running",
            podIP=ip,
            startTime=_now(),
            conditions=[
                _cond("PodScheduled", True),
                _cond("Initialized", True),
                _cond("ContainersReady", True),
                _cond("Ready", True),
            ],
            containerStatuses=[self._container(container, running, ready=True)],
        )
        self.set_status(pod, status)

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
