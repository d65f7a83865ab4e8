"""A ValidatingAdmissionPolicy: the API server, not only the runtime, enforces the session template.

The runtime's identity may create pods (it must, to start sessions); without
this policy a compromised gamgui server could create *any* pod with that
right — another image, a hostPath, a mount of the token key or of another
Secret in the token's place. The policy (``admissionregistration.k8s.io/v1``,
Kubernetes >= 1.30) matches pod creates by the runtime's ServiceAccount only and
admits them only when they look like the template stamped for a session: the
template's image in every container, no init containers but the template's
token hand-off (same image, same command) and no ephemeral containers, only the
template's volumes (Secrets and emptyDirs), the token volume holding the
session's own token Secret, never the token key, the session labels and name,
the sessions' ServiceAccount without a token, and a hard lifetime. Every
expression is built here from the same constants the template uses, so the two
cannot drift; the tests evaluate them against stamped and forged pods.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from components.config import StackConfig
from components.proxy_manifests import common_labels
from session_runtime import naming
from session_runtime.rbac import RUNTIME_SERVICE_ACCOUNT
from session_runtime.spec import TOKEN_VOLUME, session_template_pod, stamp_session_pod

__all__ = [
    "SESSION_POD_POLICY_NAME",
    "policy_name",
    "session_pod_policy",
    "session_pod_policy_binding",
    "session_pod_validations",
]

#: The policy's name, suffixed with the namespace (policies are cluster-scoped).
SESSION_POD_POLICY_NAME = "gamgui-session-pods"
_API = "admissionregistration.k8s.io/v1"
#: An id that cannot occur in a name template, split out to get the name's fixed parts.
_SENTINEL = "sentinel0id"


def _quote(value: str) -> str:
    """A CEL string literal (the values are DNS names and image references)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def policy_name(cfg: StackConfig) -> str:
    """Return the policy's (and its binding's) name for this stack's namespace."""
    return f"{SESSION_POD_POLICY_NAME}-{cfg.namespace}"


def session_pod_validations(cfg: StackConfig) -> list[dict[str, str]]:
    """Return the policy's validations (CEL ``expression`` and ``message``), in order.

    Args:
        cfg: the validated stack config (image, namespace).
    """
    template = session_template_pod(cfg.session_pod_config(), cfg.namespace)
    stamped = stamp_session_pod(
        template,
        session_id=_SENTINEL,
        namespace=cfg.namespace,
        command=None,
        credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
        created_at=datetime(2000, 1, 1, tzinfo=UTC),
    )
    spec = stamped["spec"]
    (image,) = {c["image"] for c in [*spec["containers"], *spec.get("initContainers", [])]}
    inits = spec.get("initContainers", [])
    init_names = ", ".join(_quote(c["name"]) for c in inits)
    init_commands = " || ".join(
        "c.command == [" + ", ".join(_quote(arg) for arg in c["command"]) + "]" for c in inits
    )
    volumes = ", ".join(_quote(v["name"]) for v in spec["volumes"])
    labels = "object.metadata.labels"
    sid = f"{labels}[{_quote(naming.LABEL_SESSION_ID)}]"
    pod_before, _, pod_after = naming.session_pod_name(_SENTINEL).partition(_SENTINEL)
    secret_before, _, secret_after = naming.session_token_secret_name(_SENTINEL).partition(
        _SENTINEL
    )
    pod_name = f"{_quote(pod_before)} + {sid} + {_quote(pod_after)}"
    token_secret = f"{_quote(secret_before)} + {sid} + {_quote(secret_after)}"
    return [
        {
            "expression": f"object.spec.containers.all(c, c.image == {_quote(image)}) && "
            "(!has(object.spec.initContainers) || "
            f"object.spec.initContainers.all(c, c.image == {_quote(image)}))",
            "message": "session pods run the session image only",
        },
        {
            "expression": "(!has(object.spec.initContainers) || "
            f"object.spec.initContainers.all(c, c.name in [{init_names}] && "
            f"({init_commands or 'false'}))) && "
            "!has(object.spec.ephemeralContainers)",
            "message": "session pods have no init containers but the token hand-off, "
            "and no ephemeral containers",
        },
        {
            "expression": f"object.spec.volumes.all(v, v.name in [{volumes}] && "
            "(has(v.secret) || has(v.emptyDir)))",
            "message": "session pods mount only the template's Secret and emptyDir volumes",
        },
        {
            "expression": "object.spec.volumes.all(v, !has(v.secret) || "
            f"(v.secret.secretName != {_quote(naming.TOKEN_KEY_SECRET_NAME)} && "
            f"(v.name != {_quote(TOKEN_VOLUME)} || v.secret.secretName == {token_secret})))",
            "message": "the token volume holds the session's own token Secret; "
            "the token key is never mounted",
        },
        {
            "expression": "object.spec.containers.all(c, !has(c.envFrom) && "
            "(!has(c.env) || c.env.all(e, !has(e.valueFrom))))",
            "message": "session containers take no environment from Secrets or ConfigMaps",
        },
        {
            "expression": f"{labels}[{_quote(naming.LABEL_NAME)}] == {_quote(naming.APP_NAME)} && "
            f"{labels}[{_quote(naming.LABEL_COMPONENT)}] == "
            f"{_quote(naming.COMPONENT_SESSION)} && "
            f"object.metadata.name == {pod_name}",
            "message": "session pods carry the session labels and the name of their session",
        },
        {
            "expression": "object.spec.serviceAccountName == "
            f"{_quote(spec['serviceAccountName'])} && "
            "object.spec.automountServiceAccountToken == false",
            "message": "session pods run as the sessions' ServiceAccount, without its token",
        },
        {
            "expression": "has(object.spec.activeDeadlineSeconds)",
            "message": "session pods have a hard lifetime (the session quota counts them)",
        },
    ]


def session_pod_policy(cfg: StackConfig) -> dict[str, Any]:
    """Return the ValidatingAdmissionPolicy for pods the runtime's identity creates.

    Args:
        cfg: the validated stack config.
    """
    runtime_user = f"system:serviceaccount:{cfg.namespace}:{RUNTIME_SERVICE_ACCOUNT}"
    return {
        "apiVersion": _API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": policy_name(cfg),
            "labels": common_labels(naming.COMPONENT_SESSION),
        },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "created-by-the-runtime",
                    "expression": f"request.userInfo.username == {_quote(runtime_user)}",
                }
            ],
            "validations": session_pod_validations(cfg),
        },
    }


def session_pod_policy_binding(cfg: StackConfig) -> dict[str, Any]:
    """Return the binding that applies the policy in the session namespace (deny on failure).

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": _API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {
            "name": policy_name(cfg),
            "labels": common_labels(naming.COMPONENT_SESSION),
        },
        "spec": {
            "policyName": policy_name(cfg),
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cfg.namespace}}
            },
        },
    }
