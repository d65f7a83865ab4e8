"""AsyncSessionManager: the server's runtime API for asyncio servers (FastAPI, aiohttp ...).

The twin of :class:`~session_runtime.manager.SessionManager`, as lightkube's
``AsyncClient`` is of its ``Client``: the same verbs, arguments, results and
errors, awaited, and nothing that blocks the event loop. Every decision
(validation, limits, error mapping, the handshake retry policy) comes from
:mod:`session_runtime.manager_rules`, shared with the sync manager. Kubernetes
is spoken to with lightkube's ``AsyncClient``; the local stack's few file and
process operations run in a thread pool (:class:`~session_runtime.abackends.ThreadedBackend`).

``create_session`` reports progress to a callback, or use :meth:`creating` to
get the steps as an async iterator::

    creating = manager.creating("alice")
    async for event in creating:      # ProgressEvent, as they happen
        await websocket.send_json(event.model_dump(mode="json"))
    info = await creating             # the SessionInfo (or the typed error)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from datetime import UTC, datetime

from session_runtime import manager_rules as rules
from session_runtime.abackends import AsyncSessionBackend, ThreadedBackend, get_async_backend
from session_runtime.aclient import AsyncSessionConnection
from session_runtime.errors import SessionError, SessionUnauthorizedError
from session_runtime.ids import validate_session_id
from session_runtime.metrics import LastListed, RuntimeMetrics, timed_acreate
from session_runtime.models import (
    BackendSession,
    CommandResult,
    ProgressCallback,
    ProgressEvent,
    ReapedSession,
    SessionInfo,
    SessionStatus,
)
from session_runtime.settings import WebSocketSettings, load_settings

__all__ = ["AsyncConnector", "AsyncSessionManager", "CreateProgress"]

#: Opens a connection: (url, token, timeout) -> AsyncSessionConnection. Swappable for tests.
AsyncConnector = Callable[[str, str, float], Awaitable[AsyncSessionConnection]]


async def _open_connection(url: str, token: str, timeout: float) -> AsyncSessionConnection:
    return await AsyncSessionConnection.open(url, token, timeout=timeout)


class CreateProgress:
    """A session being created: async-iterate it for the progress, await it for the result.

    The create starts on the first ``async for`` or ``await``. Iterating ends when
    the create has; awaiting returns the :class:`SessionInfo` or raises its error.
    """

    def __init__(self, start: Callable[[ProgressCallback], Awaitable[SessionInfo]]) -> None:
        self._start = start
        self._queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[SessionInfo] | None = None

    def _ensure_started(self) -> asyncio.Task[SessionInfo]:
        if self._task is None:

            async def run() -> SessionInfo:
                try:
                    return await self._start(self._queue.put_nowait)
                finally:
                    self._queue.put_nowait(None)

            self._task = asyncio.create_task(run())
        return self._task

    def __aiter__(self) -> AsyncIterator[ProgressEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ProgressEvent]:
        self._ensure_started()
        while (event := await self._queue.get()) is not None:
            yield event

    def __await__(self) -> Generator[object, None, SessionInfo]:
        return self._ensure_started().__await__()


class AsyncSessionManager:
    """Create, use, list, close and reap sessions through one backend, awaited.

    Args:
        settings: the validated WEBSOCKET_* settings.
        backend: where sessions live (``abackends.get_async_backend(settings)``).
        connector: how to open a WebSocket connection; tests swap it.
        preflight: raises when the backend's infrastructure is known to be down
            (called in a worker thread: it may read files).
        metrics: where creates, retries and reaps are counted (``metrics.registry`` is
            what the server mounts); sessions by status are those of the last
            :meth:`list_sessions`, since a scrape cannot await.
    """

    def __init__(
        self,
        settings: WebSocketSettings,
        backend: AsyncSessionBackend,
        *,
        connector: AsyncConnector | None = None,
        preflight: Callable[[], None] | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._listed = LastListed(backend.name)
        self.metrics = metrics or RuntimeMetrics(self._listed)
        self.connector: AsyncConnector = connector or _open_connection
        self._preflight = preflight

    @classmethod
    def from_settings(cls, settings: WebSocketSettings | None = None) -> AsyncSessionManager:
        """Build a manager from settings (default: the environment and ``.env``).

        URLs the backend knows better are taken from it (``backend.endpoints``:
        the running local stack's proxy, read once from its state file, here).

        Args:
            settings: already-loaded settings; loaded with :func:`load_settings` when None.

        Raises:
            SettingsError: a WEBSOCKET_* variable is invalid.
            BackendUnavailableError: the backend's client library is missing.
        """
        settings = settings or load_settings()
        if settings.backend == "kubernetes":
            return cls(settings, get_async_backend(settings))
        from session_runtime.backends import get_backend  # noqa: PLC0415 - avoids a cycle

        sync = get_backend(settings)  # the local stack: awaited through a thread pool
        return cls(sync.endpoints(settings), ThreadedBackend(sync), preflight=sync.preflight)

    async def __aenter__(self) -> AsyncSessionManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the backend's connections and threads."""
        await self.backend.aclose()

    # --- helpers -------------------------------------------------------------
    async def preflight(self) -> None:
        """Fail fast when the backend's infrastructure is known to be down.

        Raises:
            BackendUnavailableError: with what to start.
        """
        if self._preflight is not None:
            await asyncio.to_thread(self._preflight)

    async def _require(self, session_id: str) -> BackendSession:
        sid = validate_session_id(session_id)
        session = await self.backend.get(sid)
        if session is None:
            raise rules.not_found(sid)
        return session

    # --- public API ----------------------------------------------------------
    @timed_acreate
    async def create_session(
        self,
        session_id: str | None = None,
        command: str | None = None,
        credentials_secret: str | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
    ) -> SessionInfo:
        """Start a session (or return the existing one) and wait until it answers.

        Args:
            session_id: the id; a fresh one is generated when None.
            command: a GAM command the session runs first (optional).
            credentials_secret: the Secret with GAM credentials (default from settings).
            wait: when False, return as soon as the backend accepted the session.
            progress: called (on the event loop) with each step of the wait; see
                :meth:`creating` for the steps as an async iterator.

        Raises:
            SessionsDisabledError: WEBSOCKET_ENABLED is false.
            InvalidSessionIdError: the id breaks the id rule.
            SessionLimitError: WEBSOCKET_MAX_SESSIONS sessions already exist.
            SessionStartError: the session failed or did not start in time.
            SessionJoinError: the agent refused the handshake.
            SessionConnectError: the proxy or agent could not be reached.
        """
        rules.check_enabled(self.settings)
        request = rules.create_request(self.settings, session_id, command, credentials_secret)
        sid = request.session_id
        session = await self.backend.create(request, progress)
        if not wait:
            return rules.session_info(self.settings, session)
        deadline = time.monotonic() + self.settings.start_timeout
        try:
            session = await self.backend.wait_ready(sid, self.settings.start_timeout, progress)
            remaining = max(deadline - time.monotonic(), 1.0)
            await self._handshake(session, min(remaining, rules.HANDSHAKE_RETRY_WINDOW_S), progress)
        except SessionError:
            if session.created:  # free the slot; the original error is the one to report
                with contextlib.suppress(SessionError):
                    await self.backend.delete(sid)
            raise
        info = rules.session_info(self.settings, session)
        return info.model_copy(update={"status": SessionStatus.READY})

    def creating(
        self,
        session_id: str | None = None,
        command: str | None = None,
        credentials_secret: str | None = None,
        *,
        wait: bool = True,
    ) -> CreateProgress:
        """:meth:`create_session` with its progress as an async iterator (await it for the info).

        Args:
            session_id: the id; a fresh one is generated when None.
            command: a GAM command the session runs first (optional).
            credentials_secret: the Secret with GAM credentials (default from settings).
            wait: when False, the result comes as soon as the backend accepted the session.
        """
        return CreateProgress(
            lambda progress: self.create_session(
                session_id, command, credentials_secret, wait=wait, progress=progress
            )
        )

    async def _handshake(
        self, session: BackendSession, window: float, progress: ProgressCallback | None
    ) -> None:
        """Phase two: handshake and ping through the proxy, retried while DNS catches up."""
        url = self.settings.session_url(session.session_id)
        token = session.token.get_secret_value()
        timeout = self.settings.connect_timeout
        give_up = time.monotonic() + window
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await self.connector(url, token, timeout)
                async with conn:
                    await conn.ping(timeout=timeout)
            except SessionUnauthorizedError as exc:
                raise rules.own_token_refused(exc) from exc
            except rules.RETRIED_HANDSHAKE_ERRORS as exc:
                delay = rules.HANDSHAKE_BACKOFF.delay(attempt)
                if (
                    attempt >= rules.HANDSHAKE_BACKOFF.attempts
                    or time.monotonic() + delay > give_up
                ):
                    raise rules.handshake_failed(attempt, exc) from exc
                self.metrics.handshake_retried()
                if progress is not None and attempt == 1:
                    progress(rules.handshake_progress(session.session_id))
                await asyncio.sleep(delay)
                continue
            if progress is not None:
                progress(rules.ready_progress(session.session_id))
            return

    async def connect(self, session_id: str) -> AsyncSessionConnection:
        """Open a WebSocket connection to a session through the proxy.

        Args:
            session_id: the session to join.

        Raises:
            SessionsDisabledError, SessionNotFoundError, SessionJoinError, SessionConnectError.
        """
        rules.check_enabled(self.settings)
        await self.preflight()
        session = await self._require(session_id)
        return await self.connector(
            self.settings.session_url(session.session_id),
            session.token.get_secret_value(),
            self.settings.connect_timeout,
        )

    async def send_command(self, session_id: str, command: str) -> CommandResult:
        """Run one command in a session and return its complete result.

        A dropped connection (a proxy restart) is resumed transparently.

        Args:
            session_id: the session to run it in.
            command: a GAM command line (a leading ``gam`` is optional).

        Raises:
            SessionsDisabledError, SessionNotFoundError, SessionJoinError,
            SessionConnectError, CommandTimeoutError.
        """
        rules.check_enabled(self.settings)
        async with await self.connect(session_id) as conn:
            return await conn.run(command, timeout=self.settings.command_timeout)

    async def close_session(self, session_id: str) -> bool:
        """Remove a session and all it owns; True when something was removed.

        Args:
            session_id: the session to close (closing a missing one returns False).
        """
        rules.check_enabled(self.settings)
        return await self.backend.delete(validate_session_id(session_id))

    async def get_session(self, session_id: str) -> SessionInfo:
        """Return one session.

        Args:
            session_id: the session to look up.

        Raises:
            SessionNotFoundError: no such session.
        """
        rules.check_enabled(self.settings)
        return rules.session_info(self.settings, await self._require(session_id))

    async def list_sessions(self) -> list[SessionInfo]:
        """Return every session, oldest first."""
        rules.check_enabled(self.settings)
        sessions = await self.backend.list()
        self._listed.update(sessions)
        return [rules.session_info(self.settings, s) for s in sessions]

    async def reap(self, *, dry_run: bool = False) -> list[ReapedSession]:
        """Remove finished, expired, idle and orphaned sessions.

        Args:
            dry_run: report what would be removed, remove nothing.
        """
        rules.check_enabled(self.settings)
        reaped = await self.backend.reap(
            idle_timeout=self.settings.idle_timeout,
            max_lifetime=self.settings.max_lifetime,
            now=datetime.now(UTC),
            dry_run=dry_run,
        )
        rules.record_reaped(self.metrics, reaped)
        return reaped
