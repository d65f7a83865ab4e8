"""``gamgui-session doctor``: the troubleshooting checklist, in the order a person would run it.

1. settings valid (templates carry ``{{SESSION_ID}}``, the proxy URL is well-formed);
2. the Kubernetes API answers;
3. RBAC allows every verb the runtime uses (one SelfSubjectAccessReview per verb);
4. the PodTemplate, the headless Service and the ResourceQuota exist;
5. the proxy Deployment exists and is ready;
6. the default session answers (handshake through the proxy and a command);
7. with ``full``, a ``test-session`` round trip: create, check, close a fresh session.

Each check is one pass/fail line with a hint. A check whose ground is missing
(the API is unreachable, so RBAC cannot be asked) is skipped with the reason,
not failed again. With the local backend the cluster checks are skipped.
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
    "RBAC_NEEDS",
    "CheckLine",
    "DoctorReport",
    "run_doctor",
]

#: Every (resource, verb) the runtime's Role must allow in the session namespace.
RBAC_NEEDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pods", ("create", "get", "list", "watch", "delete")),
    ("secrets", ("create", "get", "list", "patch", "delete")),
    ("events", ("create", "list", "watch")),
    ("podtemplates", ("get",)),
)


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
            detail = exc.message + (f": {exc.cause}" if exc.cause else "")
            return self.add(name, False, detail, exc.hint)
        except Exception as exc:  # a checklist reports every failure, it never crashes
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return self.add(name, False, detail, "unexpected error; rerun with the API reachable")
        return self.add(name, ok, detail, hint)

    def skip(self, names: list[str], why: str) -> None:
        for name in names:
            self.add(name, None, why)


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


def _check_local_stack(settings: WebSocketSettings) -> tuple[bool, str, str | None]:
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415 - local only

    stack = LocalStack(settings.local_state_dir)
    stack.require_running()  # raises with the fix when it is down
    return True, f"running; proxy at {stack.proxy_url()}", None


class _ClusterChecks:
    """The checks that ask the Kubernetes API (lightkube imported only here)."""

    def __init__(self, settings: WebSocketSettings, api: Any) -> None:
        self.settings = settings
        self.api = api

    def reachable(self) -> tuple[bool, str, str | None]:
        from lightkube.resources.core_v1 import Pod  # noqa: PLC0415

        from session_runtime.errors import BackendUnavailableError  # noqa: PLC0415

        try:
            found = self.api.list(Pod, labels=naming.session_selector())
        except BackendUnavailableError:
            raise
        except SessionError as exc:  # an answer, even a refusal, proves the API is there
            return True, f"answers (but: {exc.cause})", None
        return True, f"answers; {len(found)} session pod(s) in {self.settings.namespace}", None

    def rbac(self) -> tuple[bool, str, str | None]:
        from lightkube.models.authorization_v1 import (  # noqa: PLC0415
            ResourceAttributes,
            SelfSubjectAccessReviewSpec,
        )
        from lightkube.resources.authorization_v1 import SelfSubjectAccessReview  # noqa: PLC0415

        missing = []
        for resource, verbs in RBAC_NEEDS:
            for verb in verbs:
                review = SelfSubjectAccessReview(
                    spec=SelfSubjectAccessReviewSpec(
                        resourceAttributes=ResourceAttributes(
                            namespace=self.settings.namespace, verb=verb, resource=resource
                        )
                    )
                )
                answer = self.api.call(
                    f"review {verb} {resource}", lambda r=review: self.api.client.create(r)
                )
                if not (answer and answer.status and answer.status.allowed):
                    missing.append(f"{verb} {resource}")
        total = sum(len(v) for _, v in RBAC_NEEDS)
        if missing:
            return (
                False,
                f"not allowed: {', '.join(missing)}",
                "grant these verbs in the runtime's Role (the Pulumi stack declares it)",
            )
        return True, f"all {total} verbs allowed in {self.settings.namespace}", None

    def pod_template(self) -> tuple[bool, str, str | None]:
        from lightkube.resources.core_v1 import PodTemplate  # noqa: PLC0415

        name = self.settings.session_template_name
        found = self.api.get(PodTemplate, name)
        if found is None:
            return False, f"PodTemplate {name} not found", "apply the Pulumi stack (`pulumi up`)"
        containers = [c.name for c in (found.template.spec.containers if found.template else [])]
        if naming.SESSION_CONTAINER_NAME not in containers:
            return (
                False,
                f"PodTemplate {name} has no {naming.SESSION_CONTAINER_NAME!r} container",
                "re-apply the stack; the template must come from session_template_pod()",
            )
        return True, f"PodTemplate {name} found", None

    def service(self) -> tuple[bool, str, str | None]:
        from lightkube.resources.core_v1 import Service  # noqa: PLC0415

        name = naming.SESSION_SERVICE_NAME
        found = self.api.get(Service, name)
        if found is None:
            return False, f"Service {name} not found", "apply the Pulumi stack (`pulumi up`)"
        if not found.spec or found.spec.clusterIP != "None":
            return (
                False,
                f"Service {name} is not headless",
                "set clusterIP: None so session pods get DNS names",
            )
        return True, f"headless Service {name} found", None

    def quota(self) -> tuple[bool, str, str | None]:
        from lightkube.resources.core_v1 import ResourceQuota  # noqa: PLC0415

        for quota in self.api.list(ResourceQuota):
            scopes = (quota.spec.scopes if quota.spec else None) or []
            hard = (quota.spec.hard if quota.spec else None) or {}
            if "Terminating" in scopes and "pods" in hard:
                limit = str(hard["pods"])
                detail = f"ResourceQuota {quota.metadata.name}: pods={limit} (Terminating scope)"
                if limit != str(self.settings.max_sessions):
                    detail += f"; WEBSOCKET_MAX_SESSIONS is {self.settings.max_sessions}"
                return True, detail, None
        return (
            False,
            "no ResourceQuota with scope Terminating and a pods limit",
            "apply the Pulumi stack: the quota is what enforces the session limit atomically",
        )

    def proxy(self) -> tuple[bool, str, str | None]:
        from lightkube.resources.apps_v1 import Deployment  # noqa: PLC0415

        name = naming.PROXY_SERVICE_NAME
        found = self.api.get(Deployment, name)
        if found is None:
            return False, f"Deployment {name} not found", "apply the Pulumi stack (`pulumi up`)"
        ready = (found.status.readyReplicas if found.status else None) or 0
        wanted = (found.spec.replicas if found.spec else None) or 1
        if ready < 1:
            return (
                False,
                f"Deployment {name}: 0/{wanted} replicas ready",
                f"`kubectl -n {self.settings.namespace} describe deployment {name}`",
            )
        return True, f"Deployment {name}: {ready}/{wanted} replicas ready", None


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


_CLUSTER_CHECKS = ["rbac", "pod-template", "session-service", "resource-quota", "proxy"]


def run_doctor(
    settings: WebSocketSettings | None = None,
    *,
    full: bool = False,
    api: Any | None = None,
    manager: Any | None = None,
) -> DoctorReport:
    """Run the checklist and return every line; never raises for a failed check.

    Args:
        settings: the settings to check (default: the environment and ``.env``).
        full: also create, check and close a fresh session.
        api: a :class:`~session_runtime.backends.kubernetes.api.KubeApi` (default: from settings).
        manager: a :class:`~session_runtime.manager.SessionManager` (default: from settings).
    """
    lines = _Checklist()
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            lines.add("settings", False, exc.cause or exc.message, exc.hint)
            lines.skip(["api", *_CLUSTER_CHECKS, "default-session"], "settings are invalid")
            return DoctorReport(checks=lines.lines)
    if settings.backend == "local":
        from session_runtime.manager import local_stack_settings  # noqa: PLC0415

        settings = local_stack_settings(settings)  # the running stack's URLs, when it runs
    lines.run("settings", lambda: _check_settings(settings))
    if settings.backend == "kubernetes":
        _cluster_lines(lines, settings, api)
    else:
        lines.skip(["api", *_CLUSTER_CHECKS], "backend is local: no cluster to check")
        lines.run("local-stack", lambda: _check_local_stack(settings))
    try:
        if manager is None:
            from session_runtime.manager import SessionManager  # noqa: PLC0415

            manager = SessionManager.from_settings(settings)
    except SessionError as exc:
        detail = exc.message + (f": {exc.cause}" if exc.cause else "")
        lines.add("default-session", False, detail, exc.hint)
        return DoctorReport(checks=lines.lines)
    lines.run("default-session", lambda: _session_check(manager, DEFAULT_SESSION_ID))
    if full:
        lines.run("test-session", lambda: _round_trip(manager))
    return DoctorReport(checks=lines.lines)


def _cluster_lines(lines: _Checklist, settings: WebSocketSettings, api: Any | None) -> None:
    """Add the API, RBAC and object checks; skip the rest when the API is unreachable."""
    if api is None:
        try:
            api = _default_api(settings)
        except SessionError as exc:
            lines.add("api", False, exc.message + (f": {exc.cause}" if exc.cause else ""), exc.hint)
            lines.skip(_CLUSTER_CHECKS, "no cluster configuration")
            return
    cluster = _ClusterChecks(settings, api)
    if not lines.run("api", cluster.reachable):
        lines.skip(_CLUSTER_CHECKS, "the API is unreachable")
        return
    checks = (cluster.rbac, cluster.pod_template, cluster.service, cluster.quota, cluster.proxy)
    for name, check in zip(_CLUSTER_CHECKS, checks, strict=True):
        lines.run(name, check)


def _default_api(settings: WebSocketSettings) -> Any:
    from session_runtime.backends.kubernetes.api import (  # noqa: PLC0415
        KubeApi,
        RetryPolicy,
        load_kube_config,
    )

    return KubeApi(
        load_kube_config(settings),
        settings.namespace,
        retry=RetryPolicy(attempts=2, request_timeout=5.0),
    )
