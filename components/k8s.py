"""Turn a plain manifest dict into the matching typed pulumi-kubernetes resource.

The builders produce JSON-shaped manifests (camelCase, as the API uses them);
pulumi-kubernetes accepts those dicts as inputs unchanged. Only the top-level
fields become keyword arguments, so one small table covers every kind we declare.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

__all__ = ["KINDS", "declare"]

#: (apiVersion, kind) -> resource class.
KINDS: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "PodTemplate"): k8s.core.v1.PodTemplate,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): (
        k8s.admissionregistration.v1.ValidatingAdmissionPolicy
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): (
        k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding
    ),
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("batch/v1", "CronJob"): k8s.batch.v1.CronJob,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
}

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def declare(
    resource_name: str,
    manifest: dict[str, Any],
    opts: pulumi.ResourceOptions,
    **overrides: Any,
) -> pulumi.CustomResource:
    """Declare ``manifest`` as a pulumi-kubernetes resource.

    Args:
        resource_name: the Pulumi logical name.
        manifest: a complete manifest with apiVersion and kind.
        opts: resource options (parent, provider, dependencies).
        overrides: top-level fields to set instead (e.g. a secret ``string_data`` Output).

    Raises:
        ValueError: for a kind the table does not know.
    """
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    try:
        cls = KINDS[key]
    except KeyError:
        raise ValueError(f"no resource class for {key[0]}/{key[1]}") from None
    kwargs = {
        _CAMEL.sub("_", field).lower(): value
        for field, value in manifest.items()
        if field not in ("apiVersion", "kind")
    }
    kwargs.update(overrides)
    return cls(resource_name, opts=opts, **kwargs)
