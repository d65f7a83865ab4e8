"""The policy pack's rules: pure checks on manifests, wrapped as pulumi-policy validators.

Each rule is a plain function from manifest(s) to a list of violation messages,
so tests call it on any dict; the ``validate_*`` functions adapt it to the
pulumi-policy signatures, and :data:`POLICIES` is what the pack enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from components.images import image_problem
from session_runtime import naming

__all__ = [
    "POLICIES",
    "container_security_violations",
    "image_violations",
    "pod_specs",
    "quota_violations",
    "resource_violations",
    "session_network_policy_violations",
    "session_token_violations",
    "validate_container_security",
    "validate_images",
    "validate_quota",
    "validate_resources",
    "validate_session_network_policy",
    "validate_session_token",
]

Manifest = Mapping[str, Any]
_WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job")


def pod_specs(manifest: Manifest) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(pod labels, pod spec)`` for every pod a manifest declares or templates.

    Args:
        manifest: any Kubernetes manifest (kinds without pods yield nothing).
    """
    kind = manifest.get("kind")
    meta: Any = None
    spec: Any = None
    if kind == "Pod":
        meta, spec = manifest.get("metadata"), manifest.get("spec")
    elif kind == "PodTemplate":
        template = manifest.get("template") or {}
        meta, spec = template.get("metadata"), template.get("spec")
    elif kind in _WORKLOADS:
        template = (manifest.get("spec") or {}).get("template") or {}
        meta, spec = template.get("metadata"), template.get("spec")
    elif kind == "CronJob":
        job = ((manifest.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        template = job.get("template") or {}
        meta, spec = template.get("metadata"), template.get("spec")
    if isinstance(spec, dict):
        labels = (meta or {}).get("labels") or {}
        yield dict(labels), spec


def _containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers"):
        yield from spec.get(key) or []


def _name(manifest: Manifest) -> str:
    meta = manifest.get("metadata") or {}
    return f"{manifest.get('kind', '?')} {meta.get('name', '?')}"


def _is_session_pod(labels: Mapping[str, str]) -> bool:
    return naming.session_selector().items() <= labels.items()


# --- rules on one manifest ------------------------------------------------------
def image_violations(manifest: Manifest) -> list[str]:
    """Every container image is pinned (a version tag or digest, never ``latest``).

    Args:
        manifest: any Kubernetes manifest.
    """
    out = []
    for _, spec in pod_specs(manifest):
        for c in _containers(spec):
            problem = image_problem(c.get("image", ""))
            if problem:
                out.append(f"{_name(manifest)} container {c.get('name')!r}: {problem}")
    return out


def container_security_violations(manifest: Manifest) -> list[str]:
    """Containers run as non-root, with a read-only root filesystem, without escalation.

    Args:
        manifest: any Kubernetes manifest.
    """
    out = []
    for _, spec in pod_specs(manifest):
        pod_non_root = (spec.get("securityContext") or {}).get("runAsNonRoot") is True
        for c in _containers(spec):
            sc = c.get("securityContext") or {}
            where = f"{_name(manifest)} container {c.get('name')!r}"
            if not (sc.get("runAsNonRoot") is True or (pod_non_root and "runAsNonRoot" not in sc)):
                out.append(f"{where}: must set runAsNonRoot: true")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: must set readOnlyRootFilesystem: true")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: must set allowPrivilegeEscalation: false")
            if sc.get("privileged") is True:
                out.append(f"{where}: must not be privileged")
    return out


def resource_violations(manifest: Manifest) -> list[str]:
    """Every container sets CPU and memory requests and limits.

    Args:
        manifest: any Kubernetes manifest.
    """
    out = []
    for _, spec in pod_specs(manifest):
        for c in _containers(spec):
            res = c.get("resources") or {}
            missing = [
                f"{part}.{what}"
                for part in ("requests", "limits")
                for what in ("cpu", "memory")
                if not (res.get(part) or {}).get(what)
            ]
            if missing:
                out.append(
                    f"{_name(manifest)} container {c.get('name')!r}: resources missing "
                    + ", ".join(missing)
                )
    return out


def session_token_violations(manifest: Manifest) -> list[str]:
    """Session pods mount no service-account token.

    Args:
        manifest: any Kubernetes manifest.
    """
    return [
        f"{_name(manifest)}: session pods must set automountServiceAccountToken: false"
        for labels, spec in pod_specs(manifest)
        if _is_session_pod(labels) and spec.get("automountServiceAccountToken") is not False
    ]


# --- rules on the whole stack -----------------------------------------------------
def _session_pod_labels(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [
        labels
        for m in manifests
        if m.get("kind") == "PodTemplate"
        for labels, _ in pod_specs(m)
        if _is_session_pod(labels)
    ]


def session_network_policy_violations(manifests: list[Manifest]) -> list[str]:
    """An ingress NetworkPolicy selects the session pods of the session PodTemplate.

    Args:
        manifests: every manifest of the stack.
    """
    sessions = _session_pod_labels(manifests)
    if not sessions:
        return ["no session PodTemplate found (nothing to protect, or labels changed)"]
    for policy in manifests:
        if policy.get("kind") != "NetworkPolicy":
            continue
        spec = policy.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" in types and all(selector.items() <= labels.items() for labels in sessions):
            return []
    return ["no NetworkPolicy with an Ingress rule selects the session pods"]


def _runtime_max_sessions(manifests: list[Manifest]) -> int | None:
    for m in manifests:
        for _, spec in pod_specs(m):
            for c in _containers(spec):
                for env in c.get("env") or []:
                    if env.get("name") == "WEBSOCKET_MAX_SESSIONS":
                        try:
                            return int(env.get("value"))
                        except (TypeError, ValueError):
                            return None
    return None


def quota_violations(manifests: list[Manifest], max_sessions: int | None = None) -> list[str]:
    """A Terminating-scoped ResourceQuota caps session pods at ``max_sessions``.

    Session pods must carry ``activeDeadlineSeconds`` (or the quota does not count
    them). ``max_sessions`` defaults to the ``WEBSOCKET_MAX_SESSIONS`` the stack
    gives the runtime.

    Args:
        manifests: every manifest of the stack.
        max_sessions: the expected cap (the policy's ``maxSessions`` config), if known.
    """
    out = []
    expected = max_sessions if max_sessions is not None else _runtime_max_sessions(manifests)
    for m in manifests:
        if m.get("kind") == "PodTemplate":
            for labels, spec in pod_specs(m):
                if _is_session_pod(labels) and not spec.get("activeDeadlineSeconds"):
                    out.append(f"{_name(m)}: session pods need activeDeadlineSeconds")
    quotas = [
        m
        for m in manifests
        if m.get("kind") == "ResourceQuota"
        and "Terminating" in ((m.get("spec") or {}).get("scopes") or [])
    ]
    if not quotas:
        return [*out, "no ResourceQuota with scopes [Terminating] limits the session pods"]
    for quota in quotas:
        pods = ((quota.get("spec") or {}).get("hard") or {}).get("pods")
        if expected is not None and str(pods) != str(expected):
            out.append(f"{_name(quota)}: pods is {pods}, max sessions is {expected}")
    return out


# --- pulumi-policy adapters ---------------------------------------------------------
def _report(messages: list[str], report_violation: ReportViolation) -> None:
    for message in messages:
        report_violation(message, None)


def _resource_validator(
    rule: Callable[[Manifest], list[str]],
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type.startswith("kubernetes:"):
            _report(rule(args.props), report_violation)

    validate.__doc__ = rule.__doc__
    return validate


validate_images = _resource_validator(image_violations)
validate_container_security = _resource_validator(container_security_violations)
validate_resources = _resource_validator(resource_violations)
validate_session_token = _resource_validator(session_token_violations)


def _stack_manifests(args: StackValidationArgs) -> list[Manifest]:
    return [r.props for r in args.resources if r.resource_type.startswith("kubernetes:")]


def validate_session_network_policy(
    args: StackValidationArgs, report_violation: ReportViolation
) -> None:
    """Stack validator for :func:`session_network_policy_violations`."""
    _report(session_network_policy_violations(_stack_manifests(args)), report_violation)


def validate_quota(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Stack validator for :func:`quota_violations` (policy config ``maxSessions``)."""
    raw = (args.get_config() or {}).get("maxSessions")
    _report(
        quota_violations(_stack_manifests(args), int(raw) if raw is not None else None),
        report_violation,
    )


_MANDATORY = EnforcementLevel.MANDATORY
POLICIES: list[Policy] = [
    ResourceValidationPolicy(
        name="pinned-images",
        description="No 'latest' or untagged images: pin a version tag or a digest.",
        validate=validate_images,
        enforcement_level=_MANDATORY,
    ),
    ResourceValidationPolicy(
        name="restricted-containers",
        description="Containers run as non-root, read-only root filesystem, no escalation.",
        validate=validate_container_security,
        enforcement_level=_MANDATORY,
    ),
    ResourceValidationPolicy(
        name="resources-set",
        description="Every container sets CPU and memory requests and limits.",
        validate=validate_resources,
        enforcement_level=_MANDATORY,
    ),
    ResourceValidationPolicy(
        name="session-pods-no-service-account-token",
        description="Session pods mount no service-account token.",
        validate=validate_session_token,
        enforcement_level=_MANDATORY,
    ),
    StackValidationPolicy(
        name="session-network-policy",
        description="A NetworkPolicy selects the session pods.",
        validate=validate_session_network_policy,
        enforcement_level=_MANDATORY,
    ),
    StackValidationPolicy(
        name="session-quota-matches-max-sessions",
        description="A Terminating-scoped ResourceQuota caps session pods at max sessions.",
        validate=validate_quota,
        enforcement_level=_MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={"maxSessions": {"type": "integer", "minimum": 1}}
        ),
    ),
]
