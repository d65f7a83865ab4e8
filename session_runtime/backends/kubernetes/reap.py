"""Which session objects the reaper removes, and why: a pure decision on listed objects.

A pod is reaped when it finished (Succeeded/Failed), outlived the maximum
lifetime, its agent reports no activity for longer than the idle timeout, or it
is still Pending long after any create would have given up on it (a pod whose
creator died before its token Secret existed never starts). A
token Secret is reaped when no pod of its session exists and it is older than a
grace period (so a create in flight, which writes the Secret just before the
Pod, is never mistaken for an orphan). Pods already terminating are left
alone, and so are pods owned by a controller (the default session's
Deployment), with one exception: a pod whose agent container restarted and
exited because its one-time token hand-off was spent
(:data:`~session_runtime.naming.AGENT_EXIT_TOKEN_SPENT`). That pod can never
serve again, so it is removed as a ``replica`` (the pod only) and its
Deployment starts a fresh one. An agent that cannot be asked is not called
idle: unknown is not idle.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod, Secret

from session_runtime import naming
from session_runtime.backends.kubernetes import pods
from session_runtime.models import ReapedSession, ReapReason

__all__ = [
    "ORPHAN_GRACE_S",
    "REAP_EVENT_REASON",
    "STUCK_FACTOR",
    "STUCK_FLOOR_S",
    "ActivityProbe",
    "ReapDecision",
    "decide",
    "http_activity_probe",
    "reap_event",
    "stuck_after",
]

#: Seconds a token Secret may exist without its pod before it counts as orphaned.
ORPHAN_GRACE_S = 120.0
#: A pod still Pending after this many start timeouts is given up on: every create
#: that waits has failed (and removed its pod) after one.
STUCK_FACTOR = 2.0
#: ... and never sooner than this: the reaper's start timeout may be shorter than the
#: one a server waits with (each reads its own WEBSOCKET_START_TIMEOUT).
STUCK_FLOOR_S = 1800.0


def stuck_after(start_timeout: float) -> float:
    """Seconds after which a still-Pending session pod is reaped as never started."""
    return max(STUCK_FACTOR * start_timeout, STUCK_FLOOR_S)


#: The ``reason`` of the Event recorded on a pod just before the reaper deletes it.
REAP_EVENT_REASON = "SessionReaped"
_EVENT_SOURCE = "gamgui-session-reaper"
#: Agents asked for their activity at once.
_PROBE_WORKERS = 16

#: Returns the agent's ``last_activity`` (unix seconds) for ``ip:port``, or None if unknown.
ActivityProbe = Callable[[str], float | None]


@dataclass(frozen=True)
class ReapDecision:
    """One object to remove; ``code`` is the reason's word.

    ``kind`` is ``pod`` (the session and all it owns), ``replica`` (only this pod:
    its controller replaces it) or ``secret``.
    """

    session_id: str
    kind: str
    name: str
    reason: str
    code: ReapReason
    idle_since: datetime | None = None

    def report(self, *, removed: bool) -> ReapedSession:
        """What the reap returns for this decision."""
        return ReapedSession(
            session_id=self.session_id,
            reason=self.reason,
            reason_code=self.code,
            removed=removed,
            idle_since=self.idle_since,
        )


def http_activity_probe(address: str, timeout: float = 3.0) -> float | None:
    """Ask an agent's ``/healthz`` for ``last_activity``; None when it cannot tell.

    Args:
        address: ``<pod IP>:<port>`` (validated: an IP address and a port, nothing else).
        timeout: seconds for the whole request.
    """
    host, _, port_text = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        port = int(port_text)
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    url = f"http://{shown}:{port}{naming.HEALTH_PATH}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            body = json.loads(resp.read(65536))
    except (OSError, ValueError):
        return None
    value = body.get("last_activity") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _controlled(pod: Pod) -> bool:
    owners = (pod.metadata.ownerReferences if pod.metadata else None) or []
    return any(o.controller for o in owners)


def _token_spent(pod: Pod) -> bool:
    """True when the agent container last exited because its token hand-off was spent."""
    for status in (pod.status.containerStatuses if pod.status else None) or []:
        if status.name != naming.SESSION_CONTAINER_NAME:
            continue
        for state in (status.state, status.lastState):
            ended = state.terminated if state is not None else None
            if ended is not None and ended.exitCode == naming.AGENT_EXIT_TOKEN_SPENT:
                return True
    return False


def _finished_reason(pod: Pod) -> tuple[ReapReason, str] | None:
    phase = pod.status.phase if pod.status else None
    if phase == "Succeeded":
        return ReapReason.FINISHED, "finished (Succeeded)"
    if phase == "Failed":
        why = pod.status.reason if pod.status else None
        return ReapReason.FAILED, f"failed ({why})" if why else "failed"
    return None


def _agent_address(pod: Pod) -> str | None:
    """``podIP:port`` of a Ready pod's agent, else None (only Ready agents are asked)."""
    if not pods.is_ready(pod) or pod.status is None or not pod.status.podIP:
        return None
    return f"{pod.status.podIP}:{pods.agent_port_of(pod)}"


def _probe_all(addresses: list[str], probe: ActivityProbe) -> ActivityProbe:
    """Ask every agent at once (a slow agent must not make the reaper take minutes)."""
    if not addresses:
        return probe
    with ThreadPoolExecutor(max_workers=min(_PROBE_WORKERS, len(addresses))) as pool:
        answers = dict(zip(addresses, pool.map(probe, addresses), strict=True))
    return answers.get


def _pod_reason(
    pod: Pod,
    *,
    now: datetime,
    idle_timeout: float,
    max_lifetime: float,
    probe: ActivityProbe,
    stuck_after: float | None,
) -> tuple[ReapReason, str, datetime | None] | None:
    finished = _finished_reason(pod)
    if finished is not None:
        return (*finished, None)
    age = (now - pods.created_at(pod)).total_seconds()
    if age > max_lifetime:
        return (
            ReapReason.LIFETIME_EXCEEDED,
            f"outlived its lifetime ({age:.0f}s > {max_lifetime:.0f}s)",
            None,
        )
    phase = pod.status.phase if pod.status else None
    if stuck_after is not None and phase in (None, "Pending") and age > stuck_after:
        return (
            ReapReason.FAILED,
            f"never started (Pending for {age:.0f}s > {stuck_after:.0f}s)",
            None,
        )
    return _idle_reason(pod, now=now, idle_timeout=idle_timeout, probe=probe)


def _idle_reason(
    pod: Pod, *, now: datetime, idle_timeout: float, probe: ActivityProbe
) -> tuple[ReapReason, str, datetime | None] | None:
    """Idle when its Ready agent says so; an agent that cannot be asked is not idle."""
    address = _agent_address(pod)
    last = probe(address) if address is not None else None
    if last is None:
        return None
    idle = now.timestamp() - last
    if idle <= idle_timeout:
        return None
    return (
        ReapReason.IDLE,
        f"idle for {idle:.0f}s (> {idle_timeout:.0f}s)",
        datetime.fromtimestamp(last, UTC),
    )


def decide(
    pod_list: list[Pod],
    secret_list: list[Secret],
    *,
    now: datetime,
    idle_timeout: float,
    max_lifetime: float,
    probe: ActivityProbe,
    orphan_grace: float = ORPHAN_GRACE_S,
    stuck_after: float | None = None,
) -> list[ReapDecision]:
    """Return what to remove, pods first, then orphaned Secrets.

    Args:
        pod_list: every session pod in the namespace.
        secret_list: every session token Secret in the namespace.
        now: the current time (timezone-aware).
        idle_timeout: seconds without activity before a session is idle.
        max_lifetime: seconds a session may live at most.
        probe: returns an agent's last activity (injectable for tests).
        orphan_grace: seconds before a pod-less Secret counts as orphaned.
        stuck_after: seconds after which a still-Pending pod is given up on
            (:func:`stuck_after` of the start timeout; None: never).
    """
    decisions: list[ReapDecision] = []
    with_pod: set[str] = set()
    candidates = [
        p
        for p in pod_list
        if not _controlled(p)
        and not (p.metadata and p.metadata.deletionTimestamp is not None)
        and _finished_reason(p) is None
        and (now - pods.created_at(p)).total_seconds() <= max_lifetime
    ]
    addresses = [a for a in (_agent_address(p) for p in candidates) if a is not None]
    probe = _probe_all(sorted(set(addresses)), probe)
    for pod in pod_list:
        sid = pods.session_id_of(pod)
        name = pod.metadata.name if pod.metadata else None
        if sid is None or name is None:
            continue
        with_pod.add(sid)
        if pod.metadata and pod.metadata.deletionTimestamp is not None:
            continue
        if _controlled(pod):
            if _token_spent(pod):
                decisions.append(
                    ReapDecision(
                        sid,
                        "replica",
                        name,
                        "its agent restarted and cannot read its one-time token again; "
                        "its Deployment starts a fresh pod",
                        ReapReason.RESTARTED,
                    )
                )
            continue
        reason = _pod_reason(
            pod,
            now=now,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            probe=probe,
            stuck_after=stuck_after,
        )
        if reason is not None:
            code, text, since = reason
            decisions.append(ReapDecision(sid, "pod", name, text, code, since))
    for secret in secret_list:
        sid = pods.session_id_of(secret)
        name = secret.metadata.name if secret.metadata else None
        if sid is None or name is None or sid in with_pod:
            continue
        if name != naming.session_token_secret_name(sid):
            continue
        age = (now - pods.created_at(secret)).total_seconds()
        if age > orphan_grace:
            decisions.append(
                ReapDecision(
                    sid, "secret", name, "orphaned token Secret (no pod)", ReapReason.ORPHANED
                )
            )
    return decisions


def reap_event(decision: ReapDecision, namespace: str, now: datetime) -> Event:
    """Return the Event that tells ``kubectl describe``/``get events`` why a pod was reaped.

    Args:
        decision: a ``pod`` decision.
        namespace: the pod's namespace.
        now: the time of the reap (the Event's name and timestamps derive from it).
    """
    return Event(
        metadata=ObjectMeta(
            # kubectl's naming: the object's name and a unique hex suffix.
            name=f"{decision.name}.{int(now.timestamp() * 1e9):x}",
            namespace=namespace,
            labels=naming.session_labels(decision.session_id),
        ),
        involvedObject=ObjectReference(
            apiVersion="v1", kind="Pod", name=decision.name, namespace=namespace
        ),
        reason=REAP_EVENT_REASON,
        message=f"reaped ({decision.code.value}): {decision.reason}",
        type="Normal",
        source=EventSource(component=_EVENT_SOURCE),
        reportingComponent=_EVENT_SOURCE,
        firstTimestamp=now,
        lastTimestamp=now,
        count=1,
    )
