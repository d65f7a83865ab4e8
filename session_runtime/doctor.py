"""``gamgui-session doctor``: the troubleshooting checklist, in the order a person would run it.

1. settings valid (templates carry ``{{SESSION_ID}}``, the proxy URL is well-formed);
2. the Kubernetes API answers;
3. RBAC allows everything the runtime does: one SelfSubjectAccessReview per
   question derived from the one Role definition (:mod:`session_runtime.rbac`),
   with the resource name where the Role names one;
4. the PodTemplate, the headless Service and the ResourceQuota exist;
5. the proxy Deployment exists and is ready;
6. the default session answers (handshake through the proxy and a command);
7. with ``full``, a ``test-session`` round trip: create, check, close a fresh session.

Each check is one pass/fail line with a hint. A check whose ground is missing
(the API is unreachable, so RBAC cannot be asked) is skipped with the reason,
not failed again. Steps 2-5 are the backend's own checks
(:meth:`~session_runtime.backends.base.SessionBackend.diagnostics`): the local
stack has one, ``local-stack``. Doctor runs as the runtime's own identity: a read that
identity is not granted (Services, quotas, the proxy Deployment) is reported
as "cannot check as this identity" with a hint, never as a cluster failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from session_runtime import naming
from session_runtime.errors import SessionError, SettingsError
from session_runtime.ids import DEFAULT_SESSION_ID, generate_session_id
from session_runtime.settings import WebSocketSettings, load_settings

__all__ = [
    "CheckLine",
    "DoctorReport",
    "run_doctor",
]


class CheckLine(BaseModel):
    """One line of the checklist. ``ok`` is None when the check was skipped."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool | None
    detail: str = ""
    hint: str | None = None

    def render(self) -> str:
        """Return the line as text (and the hint on the next line, for failures)."""
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        text = f"{mark}  {self.name:<16} {self.detail}".rstrip()
        if self.ok is False and self.hint:
            text += f"\n      hint: {self.hint}"
        return text


class DoctorReport(BaseModel):
    """Every check in order; ``ok`` when none failed."""

    model_config = ConfigDict(frozen=True)

    checks: list[CheckLine]

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not fail the report)."""
        return all(c.ok is not False for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when everything passed, 1 otherwise."""
        return 0 if self.ok else 1

    def render(self) -> str:
        """Return the whole checklist as text, with a verdict line."""
        failed = [c.name for c in self.checks if c.ok is False]
        verdict = (
            "doctor: all checks passed" if not failed else f"doctor: failed: {', '.join(failed)}"
        )
        return "\n".join([*(c.render() for c in self.checks), verdict])


class _Checklist:
    """Collects lines; ``run`` turns exceptions into failed lines with their hints."""

    def __init__(self) -> None:
        self.lines: list[CheckLine] = []

    def add(self, name: str, ok: bool | None, detail: str = "", hint: str | None = None) -> bool:
        self.lines.append(CheckLine(name=name, ok=ok, detail=detail, hint=hint))
        return ok is not False

    def run(self, name: str, check: Callable[[], tuple[bool, str, str | None]]) -> bool:
        try:
            ok, detail, hint = check()
        except SessionError as exc:
            if _forbidden(exc):  # the identity may not look: not a fault of the cluster
                return self.add(
                    name,
                    None,
                    f"cannot check as this identity: {exc.cause}",
                    "the runtime's Role does not grant this read (by design); run doctor "
                    "with a kubeconfig that may read it to check this line",
                )
            detail = exc.message + (f": {exc.cause}" if exc.cause else "")
            return self.add(name, False, detail, exc.hint)
        except Exception as exc:  # a checklist reports every failure, it never crashes
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return self.add(name, False, detail, "unexpected error; rerun with the API reachable")
        return self.add(name, ok, detail, hint)

    def skip(self, names: list[str], why: str) -> None:
        for name in names:
            self.add(name, None, why)


def _forbidden(exc: SessionError) -> bool:
    """True for an API refusal because of who is asking (403 Forbidden, not a quota)."""
    cause = exc.cause or ""
    return cause.startswith("403 Forbidden") and "exceeded quota" not in cause


def _check_settings(settings: WebSocketSettings) -> tuple[bool, str, str | None]:
    problems = []
    for field in ("session_connection_template", "session_path_template"):
        if naming.SESSION_ID_PLACEHOLDER not in getattr(settings, field):
            problems.append(f"WEBSOCKET_{field.upper()} lacks {naming.SESSION_ID_PLACEHOLDER}")
    sample = settings.session_url("x")
    if not sample.startswith(("ws://", "wss://")):
        problems.append("WEBSOCKET_SESSION_CONNECTION_TEMPLATE is not a ws(s):// URL")
    if problems:
        return False, "; ".join(problems), "fix the variables in the environment or .env"
    detail = (
        f"backend={settings.backend} namespace={settings.namespace} "
        f"max_sessions={settings.max_sessions} proxy={settings.proxy_http_url}"
    )
    return True, detail, None


def _session_check(manager: Any, session_id: str) -> tuple[bool, str, str | None]:
    from session_runtime.smoke import check_session  # noqa: PLC0415

    report = check_session(manager.settings, session_id, manager=manager)
    if report.ok:
        return True, f"{session_id}: " + "; ".join(s.detail for s in report.steps if s.detail), None
    step = report.first_failure
    error = (step.error or {}) if step else {}
    detail = f"{session_id}: step {step.name if step else '?'} failed: {error.get('message', '')}"
    if error.get("cause"):
        detail += f" ({error['cause']})"
    return False, detail, error.get("hint") or "run `gamgui-session test-session` for details"


def _round_trip(manager: Any) -> tuple[bool, str, str | None]:
    sid = f"doctor-{generate_session_id()[2:10]}"
    manager.create_session(sid)
    try:
        ok, detail, hint = _session_check(manager, sid)
    finally:
        manager.close_session(sid)
    return ok, detail + " (closed)", hint


def run_doctor(
    settings: WebSocketSettings | None = None,
    *,
    full: bool = False,
    manager: Any | None = None,
) -> DoctorReport:
    """Run the checklist and return every line; never raises for a failed check.

    The backend's own checks (:meth:`SessionBackend.diagnostics`: the cluster's
    API, RBAC and objects, or the local stack) run between the settings and the
    default session, as the backend's identity.

    Args:
        settings: the settings to check (default: the environment and ``.env``).
        full: also create, check and close a fresh session.
        manager: a :class:`~session_runtime.manager.SessionManager` (default: from settings).
    """
    lines = _Checklist()
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            lines.add("settings", False, exc.cause or exc.message, exc.hint)
            lines.skip(["backend", "default-session"], "settings are invalid")
            return DoctorReport(checks=lines.lines)
    try:
        if manager is None:
            from session_runtime.manager import SessionManager  # noqa: PLC0415

            manager = SessionManager.from_settings(settings)
    except SessionError as exc:
        given = settings
        lines.run("settings", lambda: _check_settings(given))
        detail = exc.message + (f": {exc.cause}" if exc.cause else "")
        lines.add("backend", False, detail, exc.hint)
        lines.skip(["default-session"], "no backend")
        return DoctorReport(checks=lines.lines)
    settings = manager.backend.endpoints(settings)  # e.g. the running local stack's URLs
    lines.run("settings", lambda: _check_settings(settings))
    for index, diagnostic in enumerate(diagnostics := manager.backend.diagnostics(settings)):
        if not lines.run(diagnostic.name, diagnostic.run) and diagnostic.gate:
            lines.skip([d.name for d in diagnostics[index + 1 :]], f"{diagnostic.name} failed")
            break
    lines.run("default-session", lambda: _session_check(manager, DEFAULT_SESSION_ID))
    if full:
        lines.run("test-session", lambda: _round_trip(manager))
    return DoctorReport(checks=lines.lines)
