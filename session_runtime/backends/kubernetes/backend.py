"""Sessions as pods in one namespace: the backend the gamgui server uses in production.

Every fact about a session lives in the cluster — the Pod (labels, annotations,
phase) and its token Secret — so any number of server replicas share sessions
and a restart loses nothing. What is held in memory is only a cache: the
PodTemplate (a few seconds), the token key, and the pod a create just made
(so the wait that follows starts without reading it back).

A fresh create is at most six API requests (docs/kubernetes-backend.md): list
the session pods (the id's pod and the live count in one answer), get the
template (cached), create the Pod, create its token Secret with the
ownerReference already set (no read-back, no patch), then watch the pod and its
Events until Ready. The token is derived from the pod's uid
(:mod:`.tokens`), so no replica ever reads a session Secret. A finished or
failed session is replaced: deleted, waited out, created again. Racing creates
for one id end with one pod: the loser's 409 reads back the winner's pod.
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
from session_runtime.backends.base import Diagnostic, SessionBackend
from session_runtime.backends.kubernetes import pods
from session_runtime.backends.kubernetes.api import (
    KubeApi,
    RetryPolicy,
    api_reason,
    load_kube_config,
    to_backend_error,
)
from session_runtime.backends.kubernetes.diagnostics import cluster_diagnostics
from session_runtime.backends.kubernetes.reap import (
    ActivityProbe,
    ReapDecision,
    decide,
    http_activity_probe,
    reap_event,
    stuck_after,
)
from session_runtime.backends.kubernetes.tokens import derive_token
from session_runtime.backends.kubernetes.watch import PodWatcher
from session_runtime.errors import (
    BackendError,
    SessionLimitError,
    SessionNotFoundError,
    SettingsError,
)
from session_runtime.ids import validate_session_id
from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ReapedSession,
    SessionStatus,
    report_progress,
)
from session_runtime.settings import WebSocketSettings

__all__ = ["TEMPLATE_CACHE_S", "TERMINATION_SLACK_S", "KubernetesBackend"]

_log = logging.getLogger(__name__)

#: Seconds a PodTemplate read is reused (a template change reaches new sessions this fast).
TEMPLATE_CACHE_S = 30.0
#: Seconds beyond a pod's grace period that a re-create waits for the old pod to go.
TERMINATION_SLACK_S = 10.0
#: Pods kept for the wait that follows their create (creates without a wait drop out).
_FRESH_KEPT = 256
#: The shortest token key accepted (the stack generates 64 characters).
_MIN_KEY_BYTES = 32
#: States in which a session is usable or becoming so: create returns it as it is.
_ALIVE = frozenset({SessionStatus.PENDING, SessionStatus.STARTING, SessionStatus.READY})


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
        self._key: bytes | None = None
        #: Pods this backend just created, by id: the next wait_ready starts from them.
        self._fresh: dict[str, Pod] = {}

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

    def _token_key(self) -> bytes:
        """Return the key tokens are derived from: the setting, else its Secret, by name."""
        if self.settings.session_token_key is not None:
            key = self.settings.session_token_key.get_secret_value().encode()
            if len(key) < _MIN_KEY_BYTES:
                raise SettingsError(
                    "WEBSOCKET_SESSION_TOKEN_KEY is too short",
                    cause=f"{len(key)} bytes; at least {_MIN_KEY_BYTES} are needed",
                    hint="set it from the gamgui-session-token-key Secret (secretKeyRef)",
                )
            return key
        if self._key is None:
            name = naming.TOKEN_KEY_SECRET_NAME
            stored = pods.secret_token(self.api.get(Secret, name), naming.TOKEN_KEY_SECRET_KEY)
            if not stored or len(stored.encode()) < _MIN_KEY_BYTES:
                raise BackendError(
                    f"Secret {name!r} with the session token key is missing or too short",
                    cause=f"no key {naming.TOKEN_KEY_SECRET_KEY!r} of at least {_MIN_KEY_BYTES} "
                    f"bytes in namespace {self.namespace}",
                    hint="apply the Pulumi stack (it declares the key), or set "
                    "WEBSOCKET_SESSION_TOKEN_KEY from that Secret",
                )
            self._key = stored.encode()
        return self._key

    def _token(self, pod: Pod) -> str | None:
        """Return a session pod's token: derived from its uid, or (default session) its Secret."""
        sid = pods.session_id_of(pod)
        if sid is None:
            return None
        if pods.is_controlled(pod):  # declared by the stack with its own token, read by name
            return pods.secret_token(self.api.get(Secret, naming.session_token_secret_name(sid)))
        uid = pod.metadata.uid if pod.metadata else None
        return derive_token(self._token_key(), self.namespace, sid, uid) if uid else None

    def _session(self, pod: Pod, *, created: bool = False) -> BackendSession:
        return pods.to_backend_session(pod, self._token(pod), created=created)

    def _session_pods(self, session_id: str | None = None) -> builtins.list[Pod]:
        """List session pods (of one id, or all) in one request."""
        labels = naming.session_selector()
        if session_id is not None:
            labels = {**labels, naming.LABEL_SESSION_ID: session_id}
        found: builtins.list[Pod] = self.api.list(Pod, labels=labels)
        return found

    def _find_pod(self, session_id: str) -> Pod | None:
        """Return the session's pod (one list request)."""
        return pods.pick_session_pod(self._session_pods(session_id), session_id)

    # --- SessionBackend ----------------------------------------------------------
    def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Create the session's Pod and token Secret, or return the live session with that id.

        A finished or failed session is replaced (deleted, waited out, created
        again); a terminating one is waited out first. ``request.token`` is not
        used: the token is derived from the new pod's uid (see :mod:`.tokens`).

        Args:
            request: id, command, credentials Secret and the session limit.
            progress: told when an old pod is replaced and when the pod is created.

        Raises:
            SessionLimitError: the limit (or the namespace's ResourceQuota) is reached.
            SessionStartError: a previous pod of this id did not go away in time.
            BackendError: the API refused, with its message.
        """
        sid = validate_session_id(request.session_id)
        everyone = self._session_pods()
        existing = pods.pick_session_pod([p for p in everyone if pods.session_id_of(p) == sid], sid)
        if existing is not None:
            status = pods.pod_status(existing)
            if status in _ALIVE or pods.is_controlled(existing):
                return self._session(existing)
            if status is not SessionStatus.TERMINATING:
                report_progress(
                    progress, sid, "replacing", f"previous session is {status.value}: replaced"
                )
                self._remove(sid)
            self._await_gone(sid, existing)
        live = sum(1 for p in everyone if pods.is_live(p) and not pods.is_controlled(p))
        if live >= request.max_sessions:
            raise SessionLimitError(request.max_sessions, cause="live session pods counted")
        key = self._token_key()  # before any write: without it the pod would be useless
        pod = self._create_pod(sid, request)
        if pod is None:  # a racing create won: its session is ours too
            winner = self.api.get(Pod, naming.session_pod_name(sid))
            if winner is None:
                raise BackendError(f"session {sid} was created and removed by another caller")
            return self._session(winner)
        token = self._create_token_secret(sid, pod, key)
        with self._template_lock:
            self._fresh[sid] = pod
            while len(self._fresh) > _FRESH_KEPT:  # creates nobody waited for
                self._fresh.pop(next(iter(self._fresh)))
        report_progress(progress, sid, "created", f"pod {naming.session_pod_name(sid)} created")
        return pods.to_backend_session(pod, token, created=True)

    def _create_pod(self, sid: str, request: CreateRequest) -> Pod | None:
        """Create the session Pod; None when a racing create made it first."""
        pod_name = naming.session_pod_name(sid)
        manifest = spec.stamp_session_pod(
            self._template_manifest(),
            session_id=sid,
            namespace=self.namespace,
            command=request.command,
            credentials_secret=request.credentials_secret,
            created_at=self._clock(),
        )
        try:
            created: Pod = self.api.create(Pod.from_dict(manifest))
        except ApiError as exc:
            code, _, message = api_reason(exc)
            if code == 409:
                return None
            if code == 403 and "exceeded quota" in message:
                raise SessionLimitError(request.max_sessions, cause=message) from exc
            raise to_backend_error(f"create Pod {pod_name}", exc) from exc
        return created

    def _create_token_secret(self, sid: str, pod: Pod, key: bytes) -> str:
        """Create the pod's token Secret, owned by the pod from the start; return the token.

        A Secret of that name can only be left over from an earlier pod of this id
        (its collection may lag): it is deleted and the create repeated. If the
        Secret cannot be made, the pod is removed: a pod without a token is useless.
        """
        meta = pod.metadata
        if meta is None or not meta.uid or not meta.name:
            raise BackendError(f"created pod for session {sid} has no uid")
        token = derive_token(key, self.namespace, sid, meta.uid)
        manifest = spec.session_token_secret(sid, self.namespace, token)
        manifest["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": meta.name, "uid": meta.uid}
        ]
        name = manifest["metadata"]["name"]
        try:
            for attempt in (1, 2):
                try:
                    self.api.create(Secret.from_dict(manifest))
                    return token
                except ApiError as exc:
                    if api_reason(exc)[0] != 409 or attempt == 2:
                        raise to_backend_error(f"create Secret {name}", exc) from exc
                    self.api.delete(Secret, name)
        except BackendError:
            self.api.delete(Pod, meta.name)
            raise
        raise AssertionError("unreachable")

    def _remove(self, sid: str) -> bool:
        """Delete the session's Pod and token Secret; True when either existed."""
        removed_pod = self.api.delete(Pod, naming.session_pod_name(sid))
        removed_secret = self.api.delete(Secret, naming.session_token_secret_name(sid))
        return removed_pod or removed_secret

    def _await_gone(self, session_id: str, pod: Pod) -> None:
        """Wait out a session's terminating pod before its id is used again."""
        meta = pod.metadata
        if meta is None or not meta.name:
            return
        grace = (pod.spec.terminationGracePeriodSeconds if pod.spec else None) or 30
        self.watcher.wait_deleted(
            session_id, meta.name, meta.resourceVersion, float(grace) + TERMINATION_SLACK_S
        )

    def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Watch the session's pod until Ready (phase one of readiness).

        Right after this backend created the pod, the wait starts from it (no read).

        Args:
            session_id: the session.
            timeout: seconds before giving up.
            progress: receives pod conditions and Events, in order.

        Raises:
            SessionNotFoundError: no such session.
            SessionStartError: it failed (with the reason), finished, vanished, or timed out.
        """
        sid = validate_session_id(session_id)
        with self._template_lock:
            found = self._fresh.pop(sid, None)
        if found is None:
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
        """Return every session pod in the namespace with its token, oldest first (then by id)."""
        sessions = [self._session(p) for p in self._session_pods() if pods.session_id_of(p)]
        return sorted(sessions, key=lambda s: (s.created_at, s.session_id))

    def delete(self, session_id: str) -> bool:
        """Delete the pod and the token Secret; a 404 for either is success.

        Returns:
            True when either object existed.

        Raises:
            BackendError: the session is run by a controller (the default session's
                Deployment); closing it is the stack's job, not the runtime's.
        """
        sid = validate_session_id(session_id)
        with self._template_lock:
            self._fresh.pop(sid, None)
        found = self._find_pod(sid)
        if found is not None and pods.is_controlled(found):
            raise BackendError(
                f"session {sid} is managed by a Deployment and cannot be closed here",
                hint="it is declared by the Pulumi stack; change it there",
            )
        return self._remove(sid)

    def diagnostics(self, settings: WebSocketSettings) -> builtins.list[Diagnostic]:
        """Return doctor's cluster checks, asked as this backend's identity."""
        return cluster_diagnostics(settings, self.api)

    def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove finished, expired and idle session pods.

        Token Secrets are owned by their pods from the moment they exist, so the
        cluster's garbage collector removes them with the pod; the runtime may
        not list Secrets and does not need to.

        Args:
            idle_timeout: seconds without agent activity before a session is idle.
            max_lifetime: seconds a session may live.
            now: the current time.
            dry_run: decide and report, remove nothing.
        """
        decisions = decide(
            self._session_pods(),
            [],
            now=now,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            probe=self.activity_probe,
            stuck_after=stuck_after(self.settings.start_timeout),
        )
        reaped = []
        for decision in decisions:
            removed = False
            if not dry_run and decision.kind in ("pod", "replica"):
                self._record_reap(decision, now)
                if decision.kind == "replica":  # its controller starts a fresh pod
                    removed = self.api.delete(Pod, decision.name)
                else:
                    removed = self.delete(decision.session_id)
            reaped.append(decision.report(removed=removed))
        return reaped

    def _record_reap(self, decision: ReapDecision, now: datetime) -> None:
        """Leave an Event on the pod saying why it goes; never let that stop the reap."""
        try:
            self.api.create(reap_event(decision, self.api.namespace, now))
        except (ApiError, BackendError) as exc:
            _log.warning("no reap Event for %s: %s", decision.name, exc)
