"""What doctor checks on a cluster, asked as the backend's own identity.

The checks come from the backend (:meth:`SessionBackend.diagnostics`), so doctor
knows nothing of Kubernetes. Every question is one the runtime's identity may
ask; a read it is not granted is reported as "cannot check as this identity"
by doctor, not as a fault of the cluster.
"""

from __future__ import annotations

from typing import Any

from session_runtime import naming
from session_runtime.backends.base import Diagnostic
from session_runtime.errors import SessionError
from session_runtime.settings import WebSocketSettings

__all__ = ["cluster_diagnostics"]


def cluster_diagnostics(settings: WebSocketSettings, api: Any) -> list[Diagnostic]:
    """Return the cluster checks in checklist order; the API check gates the rest.

    Args:
        settings: the runtime's settings (namespace, template, limit).
        api: the backend's :class:`~session_runtime.backends.kubernetes.api.KubeApi`.
    """
    checks = ClusterChecks(settings, api)
    return [
        Diagnostic("api", checks.reachable, gate=True),
        Diagnostic("rbac", checks.rbac),
        Diagnostic("pod-template", checks.pod_template),
        Diagnostic("session-service", checks.service),
        Diagnostic("resource-quota", checks.quota),
        Diagnostic("proxy", checks.proxy),
    ]


class ClusterChecks:
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
        """Ask, as this identity, every question the runtime's Role answers (one definition)."""
        from lightkube.models.authorization_v1 import (  # noqa: PLC0415
            ResourceAttributes,
            SelfSubjectAccessReviewSpec,
        )
        from lightkube.resources.authorization_v1 import SelfSubjectAccessReview  # noqa: PLC0415

        from session_runtime.rbac import access_questions, rule_text  # noqa: PLC0415

        questions = access_questions()
        missing = []
        for question in questions:
            review = SelfSubjectAccessReview(
                spec=SelfSubjectAccessReviewSpec(
                    resourceAttributes=ResourceAttributes(
                        namespace=self.settings.namespace,
                        verb=question.verb,
                        resource=question.resource,
                        name=question.name,
                    )
                )
            )
            answer = self.api.call(f"review {question}", lambda r=review: self.api.client.create(r))
            if not (answer and answer.status and answer.status.allowed):
                missing.append(question)
        if missing:
            return (
                False,
                f"not allowed: {', '.join(str(q) for q in missing)}",
                "the runtime's Role lacks: "
                + "; ".join(rule_text(q) for q in missing)
                + " (the Pulumi stack declares the Role)",
            )
        return True, f"all {len(questions)} permissions allowed in {self.settings.namespace}", None

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
