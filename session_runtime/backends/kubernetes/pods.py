"""What a session pod's status means: session status, failure reasons, progress lines.

Pure functions on lightkube ``Pod`` models (no API calls), so every rule here is
tested with hand-built pods.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from lightkube.resources.core_v1 import Pod, Secret
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.models import BackendSession, SessionStatus

__all__ = [
    "FAIL_FAST_REASONS",
    "agent_port_of",
    "condition_lines",
    "created_at",
    "failure_reason",
    "is_controlled",
    "is_live",
    "is_ready",
    "pick_session_pod",
    "pod_status",
    "secret_token",
    "session_id_of",
    "to_backend_session",
]

#: Container waiting reasons that will not fix themselves: waiting for them is pointless.
FAIL_FAST_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def _conditions(pod: Pod) -> list[Any]:
    return list((pod.status and pod.status.conditions) or [])


def is_ready(pod: Pod) -> bool:
    """Return True when the pod runs and its Ready condition is True."""
    if pod.status is None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in _conditions(pod))


def is_live(pod: Pod) -> bool:
    """Return True for a pod that counts against the session limit."""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return False
    phase = pod.status.phase if pod.status else None
    return phase not in ("Succeeded", "Failed")


def failure_reason(pod: Pod) -> str | None:
    """Return why the pod cannot become ready ("Reason: message"), or None while it may.

    Covers pod failure, a finished pod, unschedulable pods and container waiting
    reasons in :data:`FAIL_FAST_REASONS`.
    """
    status = pod.status
    if status is None:
        return None
    if status.phase in ("Failed", "Succeeded"):
        detail = status.reason or status.phase
        return f"{detail}: {status.message}" if status.message else f"pod {detail}"
    for cond in _conditions(pod):
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            return f"Unschedulable: {cond.message or 'no node fits the pod'}"
    for cs in list(status.containerStatuses or []) + list(status.initContainerStatuses or []):
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in FAIL_FAST_REASONS:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    return None


def pod_status(pod: Pod) -> SessionStatus:
    """Map phase and conditions to a :class:`SessionStatus`."""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return SessionStatus.TERMINATING
    phase = pod.status.phase if pod.status else None
    if phase == "Succeeded":
        return SessionStatus.FINISHED
    if phase == "Failed" or failure_reason(pod) is not None:
        return SessionStatus.FAILED
    if is_ready(pod):
        return SessionStatus.READY
    if phase == "Running" or any(
        c.type == "PodScheduled" and c.status == "True" for c in _conditions(pod)
    ):
        return SessionStatus.STARTING
    return SessionStatus.PENDING


def condition_lines(pod: Pod) -> list[str]:
    """Return one progress line per condition and container state, in a stable order."""
    lines = []
    for cond in _conditions(pod):
        line = f"{cond.type}={cond.status}"
        if cond.reason:
            line += f" ({cond.reason}{': ' + cond.message if cond.message else ''})"
        lines.append(line)
    for cs in (pod.status.containerStatuses or []) if pod.status else []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason:
            lines.append(f"container {cs.name}: {waiting.reason}")
        elif cs.state is not None and cs.state.running is not None:
            lines.append(f"container {cs.name}: running")
    return lines


def session_id_of(obj: Pod | Secret) -> str | None:
    """Return the session id label of a pod or Secret."""
    labels = (obj.metadata.labels if obj.metadata else None) or {}
    value = labels.get(naming.LABEL_SESSION_ID)
    return str(value) if value else None


def created_at(obj: Pod | Secret) -> datetime:
    """Return when the session was created (annotation first, then creationTimestamp)."""
    meta = obj.metadata
    annotations = (meta.annotations if meta else None) or {}
    stamp = annotations.get(naming.ANNOTATION_CREATED_AT)
    if stamp:
        try:
            parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    if meta is not None and meta.creationTimestamp is not None:
        value = meta.creationTimestamp
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


def secret_token(secret: Secret | None, key: str = naming.TOKEN_SECRET_KEY) -> str | None:
    """Return the value under ``key`` (the token) of a Secret (never logged), or None."""
    if secret is None:
        return None
    raw = (secret.data or {}).get(key)
    if raw:
        try:
            return base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    plain = (secret.stringData or {}).get(key)
    return str(plain) if plain else None


def agent_port_of(pod: Pod) -> int:
    """Return the agent's container port (the named port, else the default)."""
    for container in (pod.spec.containers if pod.spec else None) or []:
        for port in container.ports or []:
            if port.name == naming.AGENT_PORT_NAME:
                return int(port.containerPort)
    return naming.AGENT_PORT


def to_backend_session(pod: Pod, token: str | None, *, created: bool = False) -> BackendSession:
    """Build the runtime's view of a session from its pod and token.

    Args:
        pod: the session pod.
        token: its token, or None when it cannot be had (the reason says so).
        created: the caller's create started this pod.
    """
    agent_port = agent_port_of(pod)
    annotations = (pod.metadata.annotations if pod.metadata else None) or {}
    ip = pod.status.podIP if pod.status else None
    reason = failure_reason(pod)
    if token is None:
        reason = reason or "token Secret missing"
    return BackendSession(
        session_id=session_id_of(pod) or "",
        token=SecretStr(token or ""),
        status=pod_status(pod),
        created_at=created_at(pod),
        command=annotations.get(naming.ANNOTATION_COMMAND),
        credentials_secret=annotations.get(naming.ANNOTATION_CREDENTIALS_SECRET),
        agent_address=f"{ip}:{agent_port}" if ip else None,
        reason=reason,
        created=created,
    )


def is_controlled(pod: Pod) -> bool:
    """Return True for a pod run by a controller (the default session's Deployment)."""
    owners = (pod.metadata.ownerReferences if pod.metadata else None) or []
    return any(o.controller for o in owners)


def pick_session_pod(candidates: list[Pod], session_id: str) -> Pod | None:
    """Return the id's pod: the one named for it, else (the default session's
    Deployment) the Ready one, then the newest; terminating labelled pods never win.
    """
    named = naming.session_pod_name(session_id)
    for pod in candidates:
        if pod.metadata is not None and pod.metadata.name == named:
            return pod
    alive = [
        p for p in candidates if p.metadata is not None and p.metadata.deletionTimestamp is None
    ]
    alive.sort(key=lambda p: (is_ready(p), created_at(p)), reverse=True)
    return alive[0] if alive else None
