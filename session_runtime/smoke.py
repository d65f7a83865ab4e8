"""Smoke checks: prove the proxy and a session work, step by step, with timings.

Each check returns a :class:`CheckReport` instead of raising, so the CLI can
print every step, the server can expose it, and the exit code follows ``ok``.
Steps after the first failure are not run: they would only repeat it.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from pydantic import BaseModel, ConfigDict

from session_runtime import naming
from session_runtime.errors import (
    HandshakeRejectedError,
    SessionConnectError,
    SessionError,
    SessionUnreachableError,
)
from session_runtime.ids import DEFAULT_SESSION_ID, validate_session_id
from session_runtime.manager import SessionManager
from session_runtime.settings import WebSocketSettings

__all__ = [
    "CheckReport",
    "CheckStep",
    "StepFailedError",
    "check_proxy",
    "check_session",
]

_HTTP_TIMEOUT_S = 5.0
#: A path the proxy must refuse itself (an upper-case id breaks the id rule).
_INVALID_SESSION_PATH = f"{naming.SESSION_PATH_PREFIX}NOT-A-VALID-ID/"


class CheckStep(BaseModel):
    """One step of a check: what it proved, or why it failed."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    duration_ms: int
    detail: str = ""
    error: dict[str, str | None] | None = None


class CheckReport(BaseModel):
    """The outcome of a whole check; ``first_failure`` is the step to look at."""

    model_config = ConfigDict(frozen=True)

    check: str
    target: str
    ok: bool
    duration_ms: int
    steps: list[CheckStep]
    first_failure: CheckStep | None = None


class StepFailedError(SessionError):
    """A smoke step saw an answer other than the expected one."""


class _Recorder:
    """Collects steps; a failed step stops the check."""

    def __init__(self, check: str, target: str) -> None:
        self.check = check
        self.target = target
        self.steps: list[CheckStep] = []
        self.started = time.monotonic()
        self.failed = False

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time one step; append details to the yielded list; errors become a failed step."""
        detail: list[str] = []
        start = time.monotonic()
        try:
            yield detail
        except SessionError as exc:
            self._add(name, start, ok=False, detail=str(exc), error=exc.to_dict())
            raise _Stop from None
        except (OSError, ValueError) as exc:
            error = {"error": type(exc).__name__, "message": str(exc), "cause": None, "hint": None}
            self._add(name, start, ok=False, detail=str(exc), error=error)
            raise _Stop from None
        self._add(name, start, ok=True, detail="; ".join(detail))

    def _add(
        self,
        name: str,
        start: float,
        *,
        ok: bool,
        detail: str,
        error: dict[str, str | None] | None = None,
    ) -> None:
        ms = int((time.monotonic() - start) * 1000)
        self.steps.append(CheckStep(name=name, ok=ok, duration_ms=ms, detail=detail, error=error))
        self.failed = self.failed or not ok

    def report(self) -> CheckReport:
        failure = next((s for s in self.steps if not s.ok), None)
        return CheckReport(
            check=self.check,
            target=self.target,
            ok=failure is None and bool(self.steps),
            duration_ms=int((time.monotonic() - self.started) * 1000),
            steps=self.steps,
            first_failure=failure,
        )


class _Stop(Exception):
    """Internal: a step failed; stop the check."""


def _run(recorder: _Recorder, body: Callable[[_Recorder], None]) -> CheckReport:
    with suppress(_Stop):
        body(recorder)
    return recorder.report()


def _http_get(url: str) -> tuple[int, dict[str, object] | None]:
    """GET ``url`` (loopback or the in-cluster proxy); return status and JSON body if any."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:  # noqa: S310
            status, raw = response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(65536)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SessionConnectError(
            cause=f"the proxy at {url} did not answer: {reason}",
            hint="is the proxy running? (`gamgui-session local status`, or the proxy Deployment)",
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        return status, None
    return status, body if isinstance(body, dict) else None


def _fail(message: str, hint: str | None = None) -> StepFailedError:
    return StepFailedError(message, hint=hint)


def check_proxy(
    settings: WebSocketSettings | None = None, *, manager: SessionManager | None = None
) -> CheckReport:
    """Check the proxy: health, clean refusals, and the default session end to end.

    Steps: ``backend`` (its infrastructure is not known to be down),
    ``health`` (GET /healthz answers 200 ``{"status": "ok"}``),
    ``invalid-path-refused`` (an invalid id gets nginx's own JSON 404),
    ``unknown-session-refused`` (a valid but unknown id gets a JSON error with a code),
    ``default-session`` (the default session completes a handshake and a ping).

    Args:
        settings: the settings to check (default: the environment).
        manager: an existing manager (default: ``SessionManager.from_settings(settings)``).
    """
    mgr = manager or SessionManager.from_settings(settings)
    base = mgr.settings.proxy_http_url
    rec = _Recorder("proxy", base)

    def body(rec: _Recorder) -> None:
        with rec.step("backend") as detail:
            mgr.preflight()
            detail.append(f"{mgr.backend.name} backend")
        with rec.step("health") as detail:
            status, payload = _http_get(base + naming.HEALTH_PATH)
            if status != 200 or not payload or payload.get("status") != "ok":
                raise _fail(
                    f"GET {naming.HEALTH_PATH} answered {status} {payload!r}",
                    hint="the address may not be the gamgui WebSocket proxy",
                )
            detail.append(f"GET {naming.HEALTH_PATH} -> 200")
        with rec.step("invalid-path-refused") as detail:
            status, payload = _http_get(base + _INVALID_SESSION_PATH)
            code = payload.get("code") if payload else None
            if status != 404 or code != "not_found":
                raise _fail(
                    f"an invalid session path answered {status} (code {code!r}), "
                    "expected the proxy's own 404 not_found",
                    hint="the proxy config may be an old one; re-apply the infrastructure",
                )
            detail.append("404 not_found")
        with rec.step("unknown-session-refused") as detail:
            unknown = f"smoke-{secrets.token_hex(6)}"
            try:
                conn = mgr.connector(
                    mgr.settings.session_url(unknown),
                    secrets.token_urlsafe(16),
                    mgr.settings.connect_timeout,
                )
            except (HandshakeRejectedError, SessionUnreachableError) as exc:
                if exc.code is None:
                    raise _fail(
                        f"unknown session answered {exc.status} without a JSON error code",
                        hint="the proxy serves HTML error pages: the config is an old one",
                    ) from None
                detail.append(f"{exc.status} {exc.code}")
            else:
                conn.close()
                raise _fail("a handshake to an unknown session succeeded")
        with rec.step("default-session") as detail:
            with mgr.connect(DEFAULT_SESSION_ID) as conn:
                rtt = conn.ping(timeout=mgr.settings.connect_timeout)
            detail.append(f"handshake and ping ok ({rtt * 1000:.1f} ms round trip)")

    return _run(rec, body)


def check_session(
    settings: WebSocketSettings | None = None,
    session_id: str = DEFAULT_SESSION_ID,
    command: str = "version",
    *,
    manager: SessionManager | None = None,
) -> CheckReport:
    """Check one session: it exists and is ready, answers through the proxy, runs a command.

    Steps: ``exists``, ``ready`` (the backend's phase one), ``handshake`` (through the
    proxy with the session's token, and a ping), ``command`` (exits 0).

    Args:
        settings: the settings to check (default: the environment).
        session_id: the session to check.
        command: the GAM command to run (``version`` by default).
        manager: an existing manager (default: ``SessionManager.from_settings(settings)``).
    """
    mgr = manager or SessionManager.from_settings(settings)
    sid = validate_session_id(session_id)
    rec = _Recorder("session", sid)

    def body(rec: _Recorder) -> None:
        with rec.step("exists") as detail:
            mgr.preflight()
            info = mgr.get_session(sid)
            detail.append(f"status {info.status.value}")
        with rec.step("ready") as detail:
            session = mgr.backend.wait_ready(sid, mgr.settings.start_timeout)
            detail.append(f"status {session.status.value}")
        conn = None
        try:
            with rec.step("handshake") as detail:
                conn = mgr.connect(sid)
                rtt = conn.ping(timeout=mgr.settings.connect_timeout)
                detail.append(f"ping {rtt * 1000:.1f} ms via {mgr.settings.session_url(sid)}")
            with rec.step("command") as detail:
                result = conn.run(command, timeout=mgr.settings.command_timeout)
                if result.exit_code != 0:
                    tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
                    raise StepFailedError(
                        f"{command!r} exited {result.exit_code}",
                        cause=tail[0][:200] if tail else None,
                        hint="check the session's GAM credentials (credentials secret)",
                    )
                detail.append(f"{command!r} exited 0 in {result.duration_ms} ms")
        finally:
            if conn is not None:
                conn.close()

    return _run(rec, body)
