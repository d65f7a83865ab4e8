"""The backend interface, awaited: what :class:`~session_runtime.amanager.AsyncSessionManager` uses.

:class:`AsyncSessionBackend` has the verbs of
:class:`~session_runtime.backends.base.SessionBackend`, each a coroutine, with
the same behaviour in every session state. Two implementations:

- :class:`ThreadedBackend` runs a sync backend's calls in a thread pool of its
  own. It is how the **local** backend is awaited: its work is a few file
  operations under a lock, starting a process and short health polls, none of
  which may run on the event loop. The pool is sized for many concurrent
  creates (asyncio's default executor has ``cpu + 4`` workers: 6 on two cores).
- :class:`~session_runtime.akubernetes.AsyncKubernetesBackend`
  speaks to the API server with lightkube's ``AsyncClient``.

Progress callbacks are always called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ProgressEvent,
    ReapedSession,
)

if TYPE_CHECKING:
    from session_runtime.backends.base import SessionBackend
    from session_runtime.settings import WebSocketSettings

__all__ = [
    "THREADED_BACKEND_WORKERS",
    "AsyncSessionBackend",
    "ThreadedBackend",
    "get_async_backend",
]

#: Worker threads of a :class:`ThreadedBackend`: concurrent creates each hold one while waiting.
THREADED_BACKEND_WORKERS = 32

T = TypeVar("T")


class AsyncSessionBackend(ABC):
    """Where sessions live, awaited. Same verbs and contract as ``SessionBackend``."""

    name: str

    @abstractmethod
    async def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Start a session, or return the existing one with that id (see ``SessionBackend``)."""

    @abstractmethod
    async def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Wait until the session's agent is up (phase one of readiness)."""

    @abstractmethod
    async def get(self, session_id: str) -> BackendSession | None:
        """Return the session, with its token, or None."""

    @abstractmethod
    async def list(self) -> builtins.list[BackendSession]:
        """Return every session, oldest first."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove the session and everything it owns; True if something was removed."""

    @abstractmethod
    async def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove finished, expired, idle and orphaned sessions; return what and why."""

    async def aclose(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release connections and threads."""


class ThreadedBackend(AsyncSessionBackend):
    """A sync backend awaited through a thread pool of its own (the local stack's).

    Args:
        backend: the sync backend.
        max_workers: threads in the pool.
    """

    def __init__(self, backend: SessionBackend, *, max_workers: int = THREADED_BACKEND_WORKERS):
        self.backend = backend
        self.name = backend.name
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"{backend.name}-backend"
        )

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @staticmethod
    def _on_loop(progress: ProgressCallback | None) -> ProgressCallback | None:
        """Deliver a worker thread's progress events on the event loop's thread."""
        if progress is None:
            return None
        loop = asyncio.get_running_loop()

        def deliver(event: ProgressEvent) -> None:
            loop.call_soon_threadsafe(progress, event)

        return deliver

    async def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Start a session in a worker thread (see ``SessionBackend.create``)."""
        return await self._call(self.backend.create, request, self._on_loop(progress))

    async def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Wait in a worker thread (see ``SessionBackend.wait_ready``)."""
        return await self._call(
            self.backend.wait_ready, session_id, timeout, self._on_loop(progress)
        )

    async def get(self, session_id: str) -> BackendSession | None:
        """Read the session in a worker thread."""
        return await self._call(self.backend.get, session_id)

    async def list(self) -> builtins.list[BackendSession]:
        """List sessions in a worker thread."""
        return await self._call(self.backend.list)

    async def delete(self, session_id: str) -> bool:
        """Delete in a worker thread."""
        return await self._call(self.backend.delete, session_id)

    async def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Reap in a worker thread."""
        return await self._call(
            self.backend.reap,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            now=now,
            dry_run=dry_run,
        )

    async def aclose(self) -> None:
        """Stop the worker threads (after the calls in flight)."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)


def get_async_backend(settings: WebSocketSettings) -> AsyncSessionBackend:
    """Return the awaited backend named by ``settings.backend``.

    Args:
        settings: validated settings.

    Raises:
        BackendUnavailableError: the Kubernetes client library (lightkube) is missing.
    """
    from session_runtime.backends import get_backend  # noqa: PLC0415 - avoids a cycle

    if settings.backend == "kubernetes":
        from session_runtime.akubernetes import (  # noqa: PLC0415 - optional deps
            AsyncKubernetesBackend,
        )

        return AsyncKubernetesBackend(settings)
    return ThreadedBackend(get_backend(settings))
