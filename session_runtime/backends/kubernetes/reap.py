"""Which session objects the reaper removes, and why: a pure decision on listed objects.

A pod is reaped when it finished (Succeeded/Failed), outlived the maximum
lifetime, or its agent reports no activity for longer than the idle timeout. A
token Secret is reaped when no pod of its session exists and it is older than a
grace period (so a create in flight, which writes the Secret just before the
Pod, is never mistaken for an orphan). Pods owned by a controller (the default
session's Deployment) and pods already terminating are left alone. An agent
that cannot be asked is not called idle: unknown is not idle.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from lightkube.resources.core_v1 import Pod, Secret

from session_runtime import naming
from session_runtime.backends.kubernetes import pods

__all__ = ["ORPHAN_GRACE_S", "ActivityProbe", "ReapDecision", "decide", "http_activity_probe"]

#: Seconds a token Secret may exist without its pod before it counts as orphaned.
ORPHAN_GRACE_S = 120.0
#: Agents asked for their activity at once.
_PROBE_WORKERS = 16

#: Returns the agent's ``last_activity`` (unix seconds) for ``ip:port``, or None if unknown.
ActivityProbe = Callable[[str], float | None]


@dataclass(frozen=True)
class ReapDecision:
    """One object to remove: ``kind`` is ``pod`` or ``secret``."""

    session_id: str
    kind: str
    name: str
    reason: str


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


def _finished_reason(pod: Pod) -> str | None:
    phase = pod.status.phase if pod.status else None
    if phase == "Succeeded":
        return "finished (Succeeded)"
    if phase == "Failed":
        why = pod.status.reason if pod.status else None
        return f"failed ({why})" if why else "failed"
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
    pod: Pod, *, now: datetime, idle_timeout: float, max_lifetime: float, probe: ActivityProbe
) -> str | None:
    finished = _finished_reason(pod)
    if finished is not None:
        return finished
    age = (now - pods.created_at(pod)).total_seconds()
    if age > max_lifetime:
        return f"outlived its lifetime ({age:.0f}s > {max_lifetime:.0f}s)"
    address = _agent_address(pod)
    if address is None:
        return None
    last = probe(address)
    if last is None:
        return None
    idle = now.timestamp() - last
    if idle > idle_timeout:
        return f"idle for {idle:.0f}s (> {idle_timeout:.0f}s)"
    return None


def decide(
    pod_list: list[Pod],
    secret_list: list[Secret],
    *,
    now: datetime,
    idle_timeout: float,
    max_lifetime: float,
    probe: ActivityProbe,
    orphan_grace: float = ORPHAN_GRACE_S,
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
        if _controlled(pod) or (pod.metadata and pod.metadata.deletionTimestamp is not None):
            continue
        reason = _pod_reason(
            pod, now=now, idle_timeout=idle_timeout, max_lifetime=max_lifetime, probe=probe
        )
        if reason is not None:
            decisions.append(ReapDecision(sid, "pod", name, reason))
    for secret in secret_list:
        sid = pods.session_id_of(secret)
        name = secret.metadata.name if secret.metadata else None
        if sid is None or name is None or sid in with_pod:
            continue
        if name != naming.session_token_secret_name(sid):
            continue
        age = (now - pods.created_at(secret)).total_seconds()
        if age > orphan_grace:
            decisions.append(ReapDecision(sid, "secret", name, "orphaned token Secret (no pod)"))
    return decisions
