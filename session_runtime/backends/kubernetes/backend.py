"""Sessions as pods in one namespace: the backend the gamgui server uses in production.

Every fact about a session lives in the cluster — the Pod (labels, annotations,
phase) and its token Secret — so any number of server replicas share sessions
and a restart loses nothing. The only thing held in memory is the PodTemplate,
cached for a few seconds because every create needs it.

A create is at most three writes: the token Secret, the Pod, then an
ownerReference on the Secret so deleting the Pod deletes it. Racing creates for
one id end with one pod: the loser's 409 reads back the winner's session.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.resources.core_v1 import Pod, PodTemplate, Secret

from session_runtime import naming, spec
from session_runtime.backends.base import SessionBackend
from session_runtime.backends.kubernetes import pods
from session_runtime.backends.kubernetes.api import (
    KubeApi,
    RetryPolicy,
    api_reason,
    load_kube_config,
    to_backend_error,
)
from session_runtime.backends.kubernetes.reap import (
    ActivityProbe,
    ReapDecision,
    decide,
    http_activity_probe,
    reap_event,
)
from session_runtime.backends.kubernetes.watch import PodWatcher
from session_runtime.errors import BackendError, SessionLimitError, SessionNotFoundError
from session_runtime.ids import validate_session_id
from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ProgressEvent,
    ReapedSession,
    SessionStatus,
)
from session_runtime.settings import WebSocketSettings

__all__ = ["TEMPLATE_CACHE_S", "TERMINATION_SLACK_S", "KubernetesBackend"]

_log = logging.getLogger(__name__)

#: Seconds a PodTemplate read is reused (a template change reaches new sessions this fast).
TEMPLATE_CACHE_S = 30.0
#: Seconds beyond a pod's grace period that a re-create waits for the old pod to go.
TERMINATION_SLACK_S = 10.0


class KubernetesBackend(SessionBackend):
    """Session pods in ``settings.namespace``, stamped from the session PodTemplate.

    Args:
        settings: namespace, template name and kube context come from here.
        config: an explicit cluster configuration (default: :func:`load_kube_config`).
        retry: retry policy for transient API failures.
        activity_probe: returns an agent's ``last_activity`` for ``ip:port``
            (default: HTTP ``/healthz``); tests inject their own.
        trust_env: let httpx read proxy variables from the environment.
        sleep: pause between retries (tests pass a no-op).
        clock: current time (tests pin it).
    """

    name = "kubernetes"

    def __init__(
        self,
        settings: WebSocketSettings,
        *,
        config: SingleConfig | KubeConfig | None = None,
        retry: RetryPolicy | None = None,
        activity_probe: ActivityProbe = http_activity_probe,
        trust_env: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.retry = retry or RetryPolicy()
        config = config if config is not None else load_kube_config(settings)
        self.api = KubeApi(
            config, self.namespace, retry=self.retry, trust_env=trust_env, sleep=sleep
        )
        self.watcher = PodWatcher(config, self.namespace, retry=self.retry, trust_env=trust_env)
        self.activity_probe = activity_probe
        self._clock = clock
        self._template: tuple[float, dict[str, Any]] | None = None
        self._template_lock = threading.Lock()

    def close(self) -> None:
        """Close the API connections."""
        self.api.close()

    # --- helpers ---------------------------------------------------------------
    def _template_manifest(self) -> dict[str, Any]:
        """Return the PodTemplate's ``template``, cached for :data:`TEMPLATE_CACHE_S`."""
        with self._template_lock:
            cached = self._template
            if cached is not None and time.monotonic() - cached[0] < TEMPLATE_CACHE_S:
                return cached[1]
        name = self.settings.session_template_name
        found = self.api.get(PodTemplate, name)
        if found is None or found.template is None:
            raise BackendError(
                f"PodTemplate {name!r} not found in namespace {self.namespace!r}",
                hint="apply the Pulumi stack (it declares the session template); "
                "`gamgui-session doctor` checks it",
            )
        manifest: dict[str, Any] = found.template.to_dict()
        with self._template_lock:
            self._template = (time.monotonic(), manifest)
        return manifest

    def _find_pod(self, session_id: str) -> Pod | None:
        """Return the session's pod: by name, else (the default session's Deployment) by label.

        Among labelled pods the Ready one wins, then the newest; terminating pods never do.
        """
        pod: Pod | None = self.api.get(Pod, naming.session_pod_name(session_id))
        if pod is not None:
            return pod
        labels = {**naming.session_selector(), naming.LABEL_SESSION_ID: session_id}
        candidates = [
            p
            for p in self.api.list(Pod, labels=labels)
            if p.metadata is not None and p.metadata.deletionTimestamp is None
        ]
        candidates.sort(key=lambda p: (pods.is_ready(p), pods.created_at(p)), reverse=True)
        return candidates[0] if candidates else None

    def _secret(self, session_id: str) -> Secret | None:
        secret: Secret | None = self.api.get(Secret, naming.session_token_secret_name(session_id))
        return secret

    def _session(self, pod: Pod) -> BackendSession:
        sid = pods.session_id_of(pod)
        secret = self._secret(sid) if sid else None
        return pods.to_backend_session(pod, secret)

    def _live_count(self) -> int:
        return sum(
            1
            for p in self.api.list(Pod, labels=naming.session_selector())
            if pods.is_live(p) and not _controlled(p)
        )

    # --- SessionBackend ----------------------------------------------------------
    def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Create the session's Secret and Pod, or return the session that already exists.

        Args:
            request: id, token, command, credentials Secret and the session limit.
            progress: told when the pod is created.

        Raises:
            SessionLimitError: the limit (or the namespace's ResourceQuota) is reached.
            BackendError: the API refused, with its message.
        """
        sid = validate_session_id(request.session_id)
        pod_name = naming.session_pod_name(sid)
        existing = self._find_pod(sid)
        if existing is not None and pods.pod_status(existing) is SessionStatus.TERMINATING:
            self._await_gone(sid, existing)
            existing = None
        if existing is not None:
            return self._session(existing)
        if self._live_count() >= request.max_sessions:
            raise SessionLimitError(request.max_sessions, cause="live session pods counted")
        manifest = spec.stamp_session_pod(
            self._template_manifest(),
            session_id=sid,
            namespace=self.namespace,
            command=request.command,
            credentials_secret=request.credentials_secret,
            created_at=self._clock(),
        )
        secret_manifest = spec.session_token_secret(
            sid, self.namespace, request.token.get_secret_value()
        )
        made_secret = self._create_secret(secret_manifest)
        try:
            pod = self.api.create(Pod.from_dict(manifest))
        except ApiError as exc:
            code, _, message = api_reason(exc)
            if code == 409:  # a racing create won: its session (and Secret) is ours too
                winner = self.api.get(Pod, pod_name)
                if winner is None:
                    raise to_backend_error(f"create Pod {pod_name}", exc) from None
                return self._session(winner)
            if made_secret:
                self.api.delete(Secret, naming.session_token_secret_name(sid))
            if code == 403 and "exceeded quota" in message:
                raise SessionLimitError(request.max_sessions, cause=message) from None
            raise to_backend_error(f"create Pod {pod_name}", exc) from None
        except BackendError:
            if made_secret:
                self.api.delete(Secret, naming.session_token_secret_name(sid))
            raise
        self._own_secret(sid, pod)
        if progress is not None:
            progress(
                ProgressEvent(session_id=sid, phase="created", message=f"pod {pod_name} created")
            )
        return self._session(pod)

    def _await_gone(self, session_id: str, pod: Pod) -> None:
        """Wait out a closed session's terminating pod before its id is used again."""
        meta = pod.metadata
        if meta is None or not meta.name:
            return
        grace = (pod.spec.terminationGracePeriodSeconds if pod.spec else None) or 30
        self.watcher.wait_deleted(
            session_id, meta.name, meta.resourceVersion, float(grace) + TERMINATION_SLACK_S
        )

    def _create_secret(self, manifest: dict[str, Any]) -> bool:
        """Create the token Secret; False if it already existed (a racing create made it)."""
        name = manifest["metadata"]["name"]
        try:
            self.api.create(Secret.from_dict(manifest))
        except ApiError as exc:
            if api_reason(exc)[0] == 409:
                return False
            raise to_backend_error(f"create Secret {name}", exc) from None
        return True

    def _own_secret(self, session_id: str, pod: Pod) -> None:
        """Make the Pod the owner of the token Secret, so the cluster deletes it with the Pod."""
        meta = pod.metadata
        if meta is None or not meta.uid:
            raise BackendError(f"created pod for session {session_id} has no uid")
        owner = {"apiVersion": "v1", "kind": "Pod", "name": meta.name, "uid": meta.uid}
        patch = {"metadata": {"ownerReferences": [owner]}}
        self.api.patch(Secret, naming.session_token_secret_name(session_id), patch)

    def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Watch the session's pod until Ready (phase one of readiness).

        Args:
            session_id: the session.
            timeout: seconds before giving up.
            progress: receives pod conditions and Events, in order.

        Raises:
            SessionNotFoundError: no such session.
            SessionStartError: it failed (with the reason), vanished, or timed out.
        """
        sid = validate_session_id(session_id)
        found = self._find_pod(sid)
        if found is None or found.metadata is None or not found.metadata.name:
            raise SessionNotFoundError(f"session {sid} does not exist")
        if pods.is_ready(found):
            return self._session(found)
        pod = self.watcher.wait_ready(sid, found.metadata.name, timeout, progress)
        return self._session(pod)

    def get(self, session_id: str) -> BackendSession | None:
        """Return the session with its token, or None."""
        sid = validate_session_id(session_id)
        pod = self._find_pod(sid)
        return self._session(pod) if pod is not None else None

    def list(self) -> builtins.list[BackendSession]:
        """Return every session pod in the namespace with its token, oldest first."""
        secrets = {
            pods.session_id_of(s): s
            for s in self.api.list(Secret, labels=naming.session_selector())
        }
        sessions = [
            pods.to_backend_session(p, secrets.get(pods.session_id_of(p)))
            for p in self.api.list(Pod, labels=naming.session_selector())
            if pods.session_id_of(p)
        ]
        return sorted(sessions, key=lambda s: s.created_at)

    def delete(self, session_id: str) -> bool:
        """Delete the pod and the token Secret; a 404 for either is success.

        Returns:
            True when either object existed.

        Raises:
            BackendError: the session is run by a controller (the default session's
                Deployment); closing it is the stack's job, not the runtime's.
        """
        sid = validate_session_id(session_id)
        found = self._find_pod(sid)
        if found is not None and _controlled(found):
            raise BackendError(
                f"session {sid} is managed by a Deployment and cannot be closed here",
                hint="it is declared by the Pulumi stack; change it there",
            )
        removed_pod = self.api.delete(Pod, naming.session_pod_name(sid))
        removed_secret = self.api.delete(Secret, naming.session_token_secret_name(sid))
        return removed_pod or removed_secret

    def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove finished, expired and idle session pods and orphaned token Secrets.

        Args:
            idle_timeout: seconds without agent activity before a session is idle.
            max_lifetime: seconds a session may live.
            now: the current time.
            dry_run: decide and report, remove nothing.
        """
        decisions = decide(
            self.api.list(Pod, labels=naming.session_selector()),
            self.api.list(Secret, labels=naming.session_selector()),
            now=now,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            probe=self.activity_probe,
        )
        reaped = []
        for decision in decisions:
            removed = False
            if not dry_run:
                if decision.kind == "pod":
                    self._record_reap(decision, now)
                    removed = self.delete(decision.session_id)
                else:
                    removed = self.api.delete(Secret, decision.name)
            reaped.append(
                ReapedSession(
                    session_id=decision.session_id,
                    reason=decision.reason,
                    reason_code=decision.code,
                    removed=removed,
                    idle_since=decision.idle_since,
                )
            )
        return reaped

    def _record_reap(self, decision: ReapDecision, now: datetime) -> None:
        """Leave an Event on the pod saying why it goes; never let that stop the reap."""
        try:
            self.api.create(reap_event(decision, self.api.namespace, now))
        except (ApiError, BackendError) as exc:
            _log.warning("no reap Event for %s: %s", decision.name, exc)


def _controlled(pod: Pod) -> bool:
    owners = (pod.metadata.ownerReferences if pod.metadata else None) or []
    return any(o.controller for o in owners)
