"""Wait for a session pod to become Ready by watching it (never by polling in a sleep loop).

Two watches run side by side on one async client: the pod itself and the Events
about it. Every new condition or container state and every Event becomes a
:class:`~session_runtime.models.ProgressEvent`. The wait ends on Ready, fails fast
on a reason that will not fix itself (:func:`pods.failure_reason`), and gives up
at the deadline. Before it returns or fails it reports the Events already
received; it does not list them again (each request counts: a create is at
most six).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx2
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import OnErrorAction, OnErrorResult

from session_runtime.backends.kubernetes import pods
from session_runtime.backends.kubernetes.api import RetryPolicy, is_transient, to_backend_error
from session_runtime.errors import SessionStartError
from session_runtime.models import ProgressCallback, ProgressEvent

__all__ = ["EVENTS_DRAIN_MAX_S", "EVENTS_SETTLE_S", "PodWatcher", "run_sync"]

#: After the outcome, Events are still read until the stream is quiet this long ...
EVENTS_SETTLE_S = 0.1
#: ... but never longer than this.
EVENTS_DRAIN_MAX_S = 0.5

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    Uses ``asyncio.run`` when this thread has no running loop, else a worker
    thread with its own loop (so a server calling the sync API from async code works).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _event_key(event: Event) -> tuple[str, int, str]:
    stamp = event.lastTimestamp or event.eventTime or event.firstTimestamp
    text = stamp.isoformat() if stamp is not None else ""
    rv = event.metadata.resourceVersion if event.metadata else None
    name = (event.metadata.name if event.metadata else None) or ""
    return (text, int(rv) if rv and rv.isdigit() else 0, name)


class PodWatcher:
    """Watches one session pod until it is Ready, reporting progress.

    Args:
        config: the cluster configuration.
        namespace: the session namespace.
        retry: transient watch failures are retried up to ``retry.attempts`` times.
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
        self.config = config
        self.namespace = namespace
        self.retry = retry
        self.trust_env = trust_env

    def _new_client(self) -> AsyncClient:
        """A client for one wait: each sync wait runs in an event loop of its own."""
        return AsyncClient(
            self.config,
            namespace=self.namespace,
            timeout=httpx2.Timeout(self.retry.request_timeout),
            trust_env=self.trust_env,
        )

    def wait_ready(
        self, session_id: str, pod_name: str, timeout: float, progress: ProgressCallback | None
    ) -> Pod:
        """Block until the pod is Ready; return it.

        Args:
            session_id: the session (for progress events and messages).
            pod_name: the pod to watch.
            timeout: seconds before giving up.
            progress: called with each progress event, in order.

        Raises:
            SessionStartError: the pod failed (with the reason), vanished, or timed out.
            BackendError: the API refused the watch.
        """
        return run_sync(lambda: self._wait(session_id, pod_name, timeout, progress))

    def _on_error(self, exc: Exception, count: int) -> OnErrorResult:
        if is_transient(exc) and count < self.retry.attempts:
            return OnErrorResult(OnErrorAction.RETRY, sleep=self.retry.delay(count))
        return OnErrorResult(OnErrorAction.RAISE)

    async def _pump(
        self, source: Callable[[], Any], tag: str, queue: asyncio.Queue[tuple[str, str, Any]]
    ) -> None:
        """Feed one watch into the queue, reopening it after transient failures.

        lightkube retries failures inside a stream; a connection that fails before
        the response starts ends its generator, so it is reopened here (the
        tracker drops the repeated objects a fresh watch lists again).
        """
        retrying = self.retry.async_retrying(f"watch {tag}", is_transient)
        try:
            async for attempt in retrying:
                with attempt:
                    async for kind, obj in source():
                        await queue.put((tag, kind, obj))
        except (httpx2.HTTPError, OSError) as exc:
            await queue.put(("error", tag, exc))

    async def _wait(
        self, session_id: str, pod_name: str, timeout: float, progress: ProgressCallback | None
    ) -> Pod:
        client = self._new_client()
        try:
            return await self._follow(client, session_id, pod_name, timeout, progress)
        finally:
            await client.close()

    async def _follow(
        self,
        client: AsyncClient,
        session_id: str,
        pod_name: str,
        timeout: float,
        progress: ProgressCallback | None,
    ) -> Pod:
        """Watch the pod and its Events on ``client`` until it is ready, or fails."""
        tracker = _Tracker(session_id, progress)

        queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        tasks = [
            asyncio.create_task(
                self._pump(self._source(client, res, field, pod_name, timeout), tag, queue)
            )
            for res, field, tag in (
                (Pod, "metadata.name", "pod"),
                (Event, "involvedObject.name", "event"),
            )
        ]
        try:
            async with asyncio.timeout(timeout):
                while True:
                    tag, kind, obj = await queue.get()
                    if tag == "error":
                        raise to_backend_error(f"watch {kind} {pod_name}", obj)
                    if tag == "event":
                        if kind != "DELETED":
                            tracker.event(obj)
                        continue
                    outcome = tracker.pod(kind, obj)
                    if outcome is not None:
                        await _drain_events(queue, tracker)
                        return tracker.finish(obj, outcome)
        except TimeoutError:
            raise SessionStartError(
                f"session {session_id} did not become ready within {timeout:g}s",
                cause="; ".join(tracker.last) if tracker.last else "no status reported yet",
                hint="see `kubectl describe pod`, or raise WEBSOCKET_START_TIMEOUT",
            ) from None
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def wait_deleted(
        self, session_id: str, pod_name: str, resource_version: str | None, timeout: float
    ) -> None:
        """Block until a terminating pod is gone (so its id can be used again).

        Args:
            session_id: the session (for messages).
            pod_name: the terminating pod.
            resource_version: the version last read; the watch starts after it, so a
                deletion between that read and the watch is not missed.
            timeout: seconds before giving up.

        Raises:
            SessionStartError: the pod is still there at the deadline.
        """
        run_sync(lambda: self._wait_deleted(session_id, pod_name, resource_version, timeout))

    async def _wait_deleted(
        self, session_id: str, pod_name: str, resource_version: str | None, timeout: float
    ) -> None:
        client = self._new_client()
        try:
            await self._until_deleted(client, session_id, pod_name, resource_version, timeout)
        finally:
            await client.close()

    async def _until_deleted(
        self,
        client: AsyncClient,
        session_id: str,
        pod_name: str,
        resource_version: str | None,
        timeout: float,
    ) -> None:
        """Watch the pod on ``client`` until it is DELETED, or the deadline."""
        try:
            async with asyncio.timeout(timeout):
                async for kind, _ in client.watch(
                    Pod,
                    namespace=self.namespace,
                    fields={"metadata.name": pod_name},
                    resource_version=resource_version,
                    server_timeout=max(1, int(timeout) + 1),
                    on_error=self._on_error,
                ):
                    if kind == "DELETED":
                        return
        except TimeoutError:
            raise SessionStartError(
                f"session {session_id} is still shutting down after {timeout:g}s",
                hint="its previous pod is terminating; try again in a moment",
            ) from None
        except (httpx2.HTTPError, OSError) as exc:
            raise to_backend_error(f"watch pod {pod_name}", exc) from None

    def _source(
        self, client: AsyncClient, res: type[Any], field: str, name: str, timeout: float
    ) -> Callable[[], Any]:
        """Return a watch of ``res`` objects whose ``field`` is ``name``."""
        return lambda: client.watch(
            res,
            namespace=self.namespace,
            fields={field: name},
            server_timeout=max(1, int(timeout) + 1),
            on_error=self._on_error,
        )


async def _drain_events(queue: asyncio.Queue[tuple[str, str, Any]], tracker: _Tracker) -> None:
    """Report the Events still arriving on the open watch, without another request.

    The kubelet writes a pod's Events before the status they explain, but the two
    watches are separate streams: the Events stream may be a moment behind. It is
    read until it has been quiet for :data:`EVENTS_SETTLE_S` (at most
    :data:`EVENTS_DRAIN_MAX_S`); listing the Events again would cost a request.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTS_DRAIN_MAX_S
    while (left := deadline - loop.time()) > 0:
        try:
            tag, kind, obj = await asyncio.wait_for(queue.get(), min(EVENTS_SETTLE_S, left))
        except TimeoutError:
            return
        if tag == "event" and kind != "DELETED":
            tracker.event(obj)


class _Tracker:
    """Turns watch events into progress lines (each once) and a ready/failed outcome."""

    def __init__(self, session_id: str, progress: ProgressCallback | None) -> None:
        self.session_id = session_id
        self.progress = progress
        self.seen_lines: set[str] = set()
        self.seen_events: set[str] = set()
        self.last: list[str] = []

    def emit(self, phase: str, message: str) -> None:
        """Send one progress event to the callback."""
        if self.progress is not None:
            self.progress(ProgressEvent(session_id=self.session_id, phase=phase, message=message))

    def event(self, event: Event) -> None:
        """Report a Kubernetes Event about the pod, once."""
        uid = (event.metadata.uid or event.metadata.name) if event.metadata else None
        if uid is None or uid in self.seen_events:
            return
        self.seen_events.add(uid)
        text = f"{event.reason}: {event.message}" if event.message else str(event.reason)
        self.emit("event", text)

    def pod(self, kind: str, pod: Pod) -> str | None:
        """Report new conditions; return "ready", a failure reason, or None to keep waiting."""
        if kind == "DELETED":
            raise SessionStartError(
                f"session {self.session_id} was deleted while starting",
                hint="it was closed or reaped; create it again",
            )
        self.last = pods.condition_lines(pod)
        for line in self.last:
            if line not in self.seen_lines:
                self.seen_lines.add(line)
                self.emit("pod", line)
        reason = pods.failure_reason(pod)
        if reason is not None:
            return reason
        return "ready" if pods.is_ready(pod) else None

    def finish(self, pod: Pod, outcome: str) -> Pod:
        """Return the ready pod, or raise the start failure."""
        if outcome != "ready":
            raise SessionStartError(
                f"session {self.session_id} failed to start", cause=outcome, hint=_hint_for(outcome)
            )
        self.emit("ready", "pod is Ready")
        return pod


def _hint_for(reason: str) -> str:
    if reason.startswith(("ImagePullBackOff", "ErrImagePull", "InvalidImageName")):
        return "check the session image name, tag and pull secret in the PodTemplate"
    if reason.startswith("CrashLoopBackOff"):
        return "the agent exits at start; read `kubectl logs` of the session pod"
    if reason.startswith("CreateContainerConfigError"):
        return "a Secret or ConfigMap the pod needs is missing (e.g. the credentials Secret)"
    if reason.startswith("Unschedulable"):
        return "no node fits the pod: check resources, node selector and tolerations"
    return "read the pod's events and logs (`kubectl describe pod`, `kubectl logs`)"
