"""Sessions as pods, awaited: the Kubernetes backend on lightkube's ``AsyncClient``.

The asyncio twin of :class:`~session_runtime.backends.kubernetes.KubernetesBackend`:
the same requests in the same order (list the session pods, get the template,
create the Pod, create its owned token Secret, watch until Ready), the same
pure helpers (:mod:`~session_runtime.backends.kubernetes.pods`, ``spec``, the
token derivation, the reaper's ``decide``), the same retries
(:class:`~session_runtime.backends.kubernetes.api.RetryPolicy`) and typed
errors. Nothing blocks the event loop; the reaper's per-pod activity probes
(plain HTTP) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import httpx2
import msgspec
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.resources.core_v1 import Event, Pod, PodTemplate, Secret

from session_runtime import naming, spec
from session_runtime.abackends import AsyncSessionBackend
from session_runtime.backends.kubernetes import pods
from session_runtime.backends.kubernetes.api import (
    RetryPolicy,
    api_reason,
    is_transient,
    load_kube_config,
    to_backend_error,
)
from session_runtime.backends.kubernetes.backend import TEMPLATE_CACHE_S, TERMINATION_SLACK_S
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

__all__ = ["AsyncKubeApi", "AsyncKubernetesBackend"]

_log = logging.getLogger("session_runtime.backends.kubernetes")

T = TypeVar("T")
_ALIVE = frozenset({SessionStatus.PENDING, SessionStatus.STARTING, SessionStatus.READY})
#: Every kind this backend reads from the API server (Events in the pod watch).
_DECODED_KINDS: tuple[type[Any], ...] = (Pod, PodTemplate, Secret, Event)
#: What httpcore's first connection asks of anyio, whose package imports it lazily.
_ANYIO_LAZY = ("connect_tcp", "create_memory_object_stream")


def _warm_up() -> None:
    """Pay, in a worker thread, the one-off CPU of a process's first API answer.

    Both costs are once per process and would otherwise hold the event loop
    during the first create (measured 20-80 ms each on a busy 2-core machine):

    - msgspec compiles a type's decoder on first use and caches it on the class;
      ``Pod`` has hundreds of nested fields.
    - httpcore's first connection imports anyio's asyncio backend and its socket
      and stream modules (anyio imports them lazily).
    """
    for kind in _DECODED_KINDS:
        msgspec.json.Decoder(list[kind])  # type: ignore[valid-type]
    anyio.run(anyio.sleep, 0)  # imports the asyncio backend, in this thread's own loop
    for name in _ANYIO_LAZY:
        getattr(anyio, name)
    importlib.import_module("anyio.streams.tls")


class AsyncKubeApi:
    """lightkube's ``AsyncClient`` bound to one namespace, with retries and typed errors.

    Args:
        config: the cluster configuration.
        namespace: every call is made in this namespace.
        retry: the retry policy for transient failures.
        trust_env: let httpx read proxy variables from the environment.
    """

    def __init__(
        self,
        config: SingleConfig | KubeConfig,
        namespace: str,
        *,
        retry: RetryPolicy,
        trust_env: bool = True,
    ) -> None:
        self.namespace = namespace
        self.retry = retry
        self._warm: asyncio.Future[None] | None = None
        self.client = AsyncClient(
            config,
            namespace=namespace,
            timeout=httpx2.Timeout(retry.request_timeout),
            trust_env=trust_env,
            field_manager="gamgui-session",
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.client.close()

    async def _warmed_up(self) -> None:
        """Warm up off the loop, once; concurrent first calls share the wait."""
        if self._warm is None:
            self._warm = asyncio.ensure_future(asyncio.to_thread(_warm_up))
        await asyncio.shield(self._warm)

    async def call(
        self, what: str, fn: Callable[[], Awaitable[T]], *, ok_statuses: Iterable[int] = ()
    ) -> T | None:
        """Await ``fn`` with retries; None when it fails with a status in ``ok_statuses``.

        Raises:
            BackendUnavailableError: transient failures outlasted the retries.
            BackendError: the API refused, with its message.
        """
        await self._warmed_up()
        accepted = set(ok_statuses)
        tries = 0
        try:
            async for attempt in self.retry.async_retrying(what, is_transient):
                with attempt:
                    tries += 1
                    try:
                        return await fn()
                    except (httpx2.HTTPError, ApiError) as exc:
                        if api_reason(exc)[0] in accepted:
                            return None
                        raise
        except ValueError as exc:  # msgspec: the API sent an object the models reject
            raise BackendError(
                f"Kubernetes API answer to {what} could not be read", cause=str(exc)[:300]
            ) from exc
        except (httpx2.HTTPError, ApiError) as exc:
            raise to_backend_error(what, exc, attempts=tries) from exc
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def get(self, res: type[Any], name: str) -> Any | None:
        """Return the object, or None when it does not exist."""
        return await self.call(
            f"get {res.__name__} {name}",
            lambda: self.client.get(res, name, namespace=self.namespace),
            ok_statuses=(404,),
        )

    async def list(self, res: type[Any], labels: dict[str, str]) -> builtins.list[Any]:
        """Return every object of a kind matching ``labels``."""

        selector: dict[str, Any] = dict(labels)

        async def fetch() -> builtins.list[Any]:
            found = self.client.list(res, namespace=self.namespace, labels=selector)
            return [o async for o in found]

        return await self.call(f"list {res.__name__}", fetch) or []

    async def create(self, obj: Any) -> Any:
        """Create an object; 409 and 403 stay ApiError so callers can decide (never retried)."""
        await self._warmed_up()
        what = f"create {type(obj).__name__} {obj.metadata.name}"
        tries = 0
        try:
            async for attempt in self.retry.async_retrying(what, is_transient):
                with attempt:
                    tries += 1
                    return await self.client.create(obj, namespace=self.namespace)  # type: ignore[call-overload]
        except ApiError as exc:
            if api_reason(exc)[0] in (403, 409):
                raise
            raise to_backend_error(what, exc, attempts=tries) from exc
        except httpx2.HTTPError as exc:
            raise to_backend_error(what, exc, attempts=tries) from exc
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def delete(self, res: type[Any], name: str) -> bool:
        """Delete an object; True if it existed (404 is success)."""

        async def remove() -> bool:
            await self.client.delete(res, name, namespace=self.namespace)
            return True

        return bool(await self.call(f"delete {res.__name__} {name}", remove, ok_statuses=(404,)))


class _Watcher(PodWatcher):
    """The sync backend's pod watch, on the backend's one ``AsyncClient``.

    ``PodWatcher`` builds a client per wait (it runs each wait in a loop of its
    own); building one loads the TLS trust store, ~0.2 s of CPU that would stall
    this loop on every create. Both waits below are ``PodWatcher``'s own loops
    (``_follow``, ``_until_deleted``) on the shared client.
    """

    def __init__(self, client: AsyncClient, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    async def ready(
        self, session_id: str, pod_name: str, timeout: float, progress: ProgressCallback | None
    ) -> Pod:
        return await self._follow(self.client, session_id, pod_name, timeout, progress)

    async def deleted(
        self, session_id: str, pod_name: str, resource_version: str | None, timeout: float
    ) -> None:
        await self._until_deleted(self.client, session_id, pod_name, resource_version, timeout)


class AsyncKubernetesBackend(AsyncSessionBackend):
    """Session pods in ``settings.namespace``, awaited (see the module doc).

    Args:
        settings: namespace, template name and kube context come from here.
        config: an explicit cluster configuration (default: :func:`load_kube_config`).
        retry: retry policy for transient API failures.
        activity_probe: returns an agent's ``last_activity`` (run in a worker thread).
        trust_env: let httpx read proxy variables from the environment.
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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.retry = retry or RetryPolicy()
        config = config if config is not None else load_kube_config(settings)
        self.api = AsyncKubeApi(config, self.namespace, retry=self.retry, trust_env=trust_env)
        self.watcher = _Watcher(
            self.api.client, config, self.namespace, retry=self.retry, trust_env=trust_env
        )
        self.activity_probe = activity_probe
        self._clock = clock
        self._template: tuple[float, dict[str, Any]] | None = None
        self._key: bytes | None = None
        self._fresh: dict[str, Pod] = {}

    async def aclose(self) -> None:
        """Close the API connections."""
        await self.api.close()

    # --- helpers (as the sync backend's) --------------------------------------------
    async def _template_manifest(self) -> dict[str, Any]:
        cached = self._template
        if cached is not None and time.monotonic() - cached[0] < TEMPLATE_CACHE_S:
            return cached[1]
        name = self.settings.session_template_name
        found = await self.api.get(PodTemplate, name)
        if found is None or found.template is None:
            raise BackendError(
                f"PodTemplate {name!r} not found in namespace {self.namespace!r}",
                hint="apply the Pulumi stack (it declares the session template); "
                "`gamgui-session doctor` checks it",
            )
        manifest: dict[str, Any] = found.template.to_dict()
        self._template = (time.monotonic(), manifest)
        return manifest

    async def _token_key(self) -> bytes:
        if self.settings.session_token_key is not None:
            return self.settings.session_token_key.get_secret_value().encode()
        if self._key is None:
            name = naming.TOKEN_KEY_SECRET_NAME
            key = pods.secret_token(await self.api.get(Secret, name), naming.TOKEN_KEY_SECRET_KEY)
            if not key:
                raise BackendError(
                    f"Secret {name!r} with the session token key is missing",
                    cause=f"no key {naming.TOKEN_KEY_SECRET_KEY!r} in namespace {self.namespace}",
                    hint="apply the Pulumi stack (it declares the key), or set "
                    "WEBSOCKET_SESSION_TOKEN_KEY from that Secret",
                )
            self._key = key.encode()
        return self._key

    async def _token(self, pod: Pod) -> str | None:
        sid = pods.session_id_of(pod)
        if sid is None:
            return None
        if pods.is_controlled(pod):
            secret = await self.api.get(Secret, naming.session_token_secret_name(sid))
            return pods.secret_token(secret)
        uid = pod.metadata.uid if pod.metadata else None
        return derive_token(await self._token_key(), self.namespace, sid, uid) if uid else None

    async def _session(self, pod: Pod, *, created: bool = False) -> BackendSession:
        return pods.to_backend_session(pod, await self._token(pod), created=created)

    async def _session_pods(self, session_id: str | None = None) -> builtins.list[Pod]:
        labels = naming.session_selector()
        if session_id is not None:
            labels = {**labels, naming.LABEL_SESSION_ID: session_id}
        return await self.api.list(Pod, labels=labels)

    async def _find_pod(self, session_id: str) -> Pod | None:
        return pods.pick_session_pod(await self._session_pods(session_id), session_id)

    async def _remove(self, sid: str) -> bool:
        removed_pod = await self.api.delete(Pod, naming.session_pod_name(sid))
        removed_secret = await self.api.delete(Secret, naming.session_token_secret_name(sid))
        return removed_pod or removed_secret

    # --- AsyncSessionBackend ------------------------------------------------------------
    async def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Create the session's Pod and owned token Secret, or return the live session.

        Raises:
            SessionLimitError: the limit (or the namespace's ResourceQuota) is reached.
            SessionStartError: a previous pod of this id did not go away in time.
            BackendError: the API refused, with its message.
        """
        sid = validate_session_id(request.session_id)
        everyone = await self._session_pods()
        existing = pods.pick_session_pod([p for p in everyone if pods.session_id_of(p) == sid], sid)
        if existing is not None:
            status = pods.pod_status(existing)
            if status in _ALIVE or pods.is_controlled(existing):
                return await self._session(existing)
            if status is not SessionStatus.TERMINATING:
                report_progress(
                    progress, sid, "replacing", f"previous session is {status.value}: replaced"
                )
                await self._remove(sid)
            await self._await_gone(sid, existing)
        live = sum(1 for p in everyone if pods.is_live(p) and not pods.is_controlled(p))
        if live >= request.max_sessions:
            raise SessionLimitError(request.max_sessions, cause="live session pods counted")
        pod = await self._create_pod(sid, request)
        if pod is None:  # a racing create won: its session is ours too
            winner = await self.api.get(Pod, naming.session_pod_name(sid))
            if winner is None:
                raise BackendError(f"session {sid} was created and removed by another caller")
            return await self._session(winner)
        token = await self._create_token_secret(sid, pod)
        self._fresh[sid] = pod
        report_progress(progress, sid, "created", f"pod {naming.session_pod_name(sid)} created")
        return pods.to_backend_session(pod, token, created=True)

    async def _create_pod(self, sid: str, request: CreateRequest) -> Pod | None:
        manifest = spec.stamp_session_pod(
            await self._template_manifest(),
            session_id=sid,
            namespace=self.namespace,
            command=request.command,
            credentials_secret=request.credentials_secret,
            created_at=self._clock(),
        )
        try:
            created: Pod = await self.api.create(Pod.from_dict(manifest))
        except ApiError as exc:
            code, _, message = api_reason(exc)
            if code == 409:
                return None
            if code == 403 and "exceeded quota" in message:
                raise SessionLimitError(request.max_sessions, cause=message) from exc
            raise to_backend_error(f"create Pod {naming.session_pod_name(sid)}", exc) from exc
        return created

    async def _create_token_secret(self, sid: str, pod: Pod) -> str:
        meta = pod.metadata
        if meta is None or not meta.uid or not meta.name:
            raise BackendError(f"created pod for session {sid} has no uid")
        token = derive_token(await self._token_key(), self.namespace, sid, meta.uid)
        manifest = spec.session_token_secret(sid, self.namespace, token)
        manifest["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": meta.name, "uid": meta.uid}
        ]
        name = manifest["metadata"]["name"]
        try:
            for attempt in (1, 2):
                try:
                    await self.api.create(Secret.from_dict(manifest))
                    return token
                except ApiError as exc:
                    if api_reason(exc)[0] != 409 or attempt == 2:
                        raise to_backend_error(f"create Secret {name}", exc) from exc
                    await self.api.delete(Secret, name)
        except BackendError:
            await self.api.delete(Pod, meta.name)
            raise
        raise AssertionError("unreachable")

    async def _await_gone(self, session_id: str, pod: Pod) -> None:
        meta = pod.metadata
        if meta is None or not meta.name:
            return
        grace = (pod.spec.terminationGracePeriodSeconds if pod.spec else None) or 30
        await self.watcher.deleted(
            session_id, meta.name, meta.resourceVersion, float(grace) + TERMINATION_SLACK_S
        )

    async def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Watch the session's pod until Ready (phase one of readiness).

        Raises:
            SessionNotFoundError: no such session.
            SessionStartError: it failed (with the reason), finished, vanished, or timed out.
        """
        sid = validate_session_id(session_id)
        found = self._fresh.pop(sid, None) or await self._find_pod(sid)
        if found is None or found.metadata is None or not found.metadata.name:
            raise SessionNotFoundError(f"session {sid} does not exist")
        if pods.is_ready(found):
            return await self._session(found)
        pod = await self.watcher.ready(sid, found.metadata.name, timeout, progress)
        return await self._session(pod)

    async def get(self, session_id: str) -> BackendSession | None:
        """Return the session with its token, or None."""
        pod = await self._find_pod(validate_session_id(session_id))
        return await self._session(pod) if pod is not None else None

    async def list(self) -> builtins.list[BackendSession]:
        """Return every session pod with its token, oldest first (then by id)."""
        found = [p for p in await self._session_pods() if pods.session_id_of(p)]
        sessions = await asyncio.gather(*(self._session(p) for p in found))
        return sorted(sessions, key=lambda s: (s.created_at, s.session_id))

    async def delete(self, session_id: str) -> bool:
        """Delete the pod and the token Secret; a 404 for either is success.

        Raises:
            BackendError: the session is run by a controller (the default session).
        """
        sid = validate_session_id(session_id)
        self._fresh.pop(sid, None)
        found = await self._find_pod(sid)
        if found is not None and pods.is_controlled(found):
            raise BackendError(
                f"session {sid} is managed by a Deployment and cannot be closed here",
                hint="it is declared by the Pulumi stack; change it there",
            )
        return await self._remove(sid)

    async def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove finished, expired and idle session pods (probes run in a worker thread)."""
        found = await self._session_pods()
        decisions = await asyncio.to_thread(
            decide,
            found,
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
                await self._record_reap(decision, now)
                if decision.kind == "replica":  # its controller starts a fresh pod
                    removed = await self.api.delete(Pod, decision.name)
                else:
                    removed = await self.delete(decision.session_id)
            reaped.append(decision.report(removed=removed))
        return reaped

    async def _record_reap(self, decision: ReapDecision, now: datetime) -> None:
        """Leave an Event on the pod saying why it goes; never let that stop the reap."""
        try:
            await self.api.create(reap_event(decision, self.namespace, now))
        except (ApiError, BackendError) as exc:
            _log.warning("no reap Event for %s: %s", decision.name, exc)
