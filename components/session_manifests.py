"""Pure builders of the session side: template, DNS, quota, policies, RBAC, reaper, default.

The session pod itself comes from :mod:`session_runtime.spec`, the module the
Kubernetes backend stamps sessions with, so the template declared here and the
pods the runtime creates cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from components.config import StackConfig
from components.proxy_manifests import (
    common_labels,
    dns_egress_rule,
    proxy_selector,
)
from session_runtime import naming
from session_runtime.ids import DEFAULT_SESSION_ID
from session_runtime.spec import (
    SessionPodConfig,
    restricted_container_security,
    restricted_pod_security,
    session_template_pod,
    session_token_secret,
    stamp_session_pod,
)

__all__ = [
    "BLOCKED_EGRESS_CIDRS",
    "COMPONENT_REAPER",
    "COMPONENT_RUNTIME",
    "QUOTA_NAME",
    "REAPER_NAME",
    "RUNTIME_ROLE_RULES",
    "RUNTIME_SERVICE_ACCOUNT",
    "SESSION_SERVICE_ACCOUNT",
    "default_session_deployment",
    "default_session_token_secret",
    "namespace_manifest",
    "reaper_cronjob",
    "reaper_selector",
    "runtime_role",
    "runtime_role_binding",
    "runtime_service_account",
    "session_headless_service",
    "session_network_policy",
    "session_pod_template",
    "session_quota",
    "session_service_account",
]

#: The sessions' ServiceAccount: the one the session pod spec names.
SESSION_SERVICE_ACCOUNT: str = SessionPodConfig.model_fields["service_account_name"].default
RUNTIME_SERVICE_ACCOUNT = "gamgui-runtime"
QUOTA_NAME = "gamgui-sessions"
REAPER_NAME = "gamgui-session-reaper"
COMPONENT_RUNTIME = "runtime"
COMPONENT_REAPER = "reaper"
#: Session egress on 443 goes anywhere except these: link-local (cloud metadata
#: 169.254.169.254 included), private and shared ranges, loopback.
BLOCKED_EGRESS_CIDRS = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
#: Exactly what the runtime does: create/watch/delete session pods and their token
#: Secrets, read events for progress (and record why the reaper deletes a pod), read
#: the template.
RUNTIME_ROLE_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "delete", "patch"],
    },
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]},
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "list", "create", "delete", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch", "create"]},
    {
        "apiGroups": [""],
        "resources": ["podtemplates"],
        "resourceNames": [naming.SESSION_TEMPLATE_NAME],
        "verbs": ["get"],
    },
)
#: A fixed stamp time for the Deployment's template: a changing annotation would
#: roll the default session on every ``pulumi up``; the annotation is dropped.
_STAMP_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _meta(name: str, cfg: StackConfig, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.namespace, "labels": common_labels(component)}


def namespace_manifest(cfg: StackConfig) -> dict[str, Any]:
    """Return the Namespace, enforcing the ``restricted`` Pod Security Standard.

    Args:
        cfg: the validated stack config.
    """
    labels = {
        naming.LABEL_PART_OF: naming.PART_OF,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": cfg.namespace, "labels": labels},
    }


def session_pod_template(cfg: StackConfig) -> dict[str, Any]:
    """Return the ``PodTemplate`` the runtime stamps every session from.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": _meta(naming.SESSION_TEMPLATE_NAME, cfg, naming.COMPONENT_SESSION),
        "template": session_template_pod(cfg.session_pod_config(), cfg.namespace),
    }


def session_headless_service(cfg: StackConfig) -> dict[str, Any]:
    """Return the headless Service that gives session pods ``<id>.<svc>.<ns>`` DNS names.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(naming.SESSION_SERVICE_NAME, cfg, naming.COMPONENT_SESSION),
        "spec": {
            "clusterIP": "None",
            "selector": naming.session_selector(),
            "ports": [
                {
                    "name": naming.AGENT_PORT_NAME,
                    "port": cfg.sessions.agent_port,
                    "targetPort": naming.AGENT_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def session_quota(cfg: StackConfig) -> dict[str, Any]:
    """Return the ResourceQuota counting session pods (the only Terminating pods).

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(QUOTA_NAME, cfg, naming.COMPONENT_SESSION),
        "spec": {"hard": {"pods": str(cfg.sessions.max_sessions)}, "scopes": ["Terminating"]},
    }


def reaper_selector() -> dict[str, str]:
    """Return the labels that select the reaper's pods (and nothing else)."""
    return {naming.LABEL_NAME: naming.APP_NAME, naming.LABEL_COMPONENT: COMPONENT_REAPER}


def session_network_policy(cfg: StackConfig) -> dict[str, Any]:
    """Return the sessions' NetworkPolicy: in only from the proxy and the reaper; out DNS and 443.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(naming.SESSION_SERVICE_NAME, cfg, naming.COMPONENT_SESSION),
        "spec": {
            "podSelector": {"matchLabels": naming.session_selector()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    # The proxy carries the WebSockets; the reaper reads /healthz to
                    # find idle sessions. The WebSocket itself still needs the token.
                    "from": [
                        {"podSelector": {"matchLabels": proxy_selector()}},
                        {"podSelector": {"matchLabels": reaper_selector()}},
                    ],
                    "ports": [{"protocol": "TCP", "port": cfg.sessions.agent_port}],
                }
            ],
            "egress": [
                dns_egress_rule(),
                {
                    "to": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(BLOCKED_EGRESS_CIDRS)}}
                    ],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
            ],
        },
    }


def session_service_account(cfg: StackConfig) -> dict[str, Any]:
    """Return the sessions' ServiceAccount (no token mounted, no permissions).

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(SESSION_SERVICE_ACCOUNT, cfg, naming.COMPONENT_SESSION),
        "automountServiceAccountToken": False,
    }


def runtime_service_account(cfg: StackConfig) -> dict[str, Any]:
    """Return the runtime's ServiceAccount (the gamgui server and the reaper use it).

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(RUNTIME_SERVICE_ACCOUNT, cfg, COMPONENT_RUNTIME),
    }


def runtime_role(cfg: StackConfig) -> dict[str, Any]:
    """Return the runtime's Role: only what it needs, in this namespace only.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(RUNTIME_SERVICE_ACCOUNT, cfg, COMPONENT_RUNTIME),
        "rules": [dict(rule) for rule in RUNTIME_ROLE_RULES],
    }


def runtime_role_binding(cfg: StackConfig) -> dict[str, Any]:
    """Return the RoleBinding of the runtime's Role to its ServiceAccount.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(RUNTIME_SERVICE_ACCOUNT, cfg, COMPONENT_RUNTIME),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RUNTIME_SERVICE_ACCOUNT,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": RUNTIME_SERVICE_ACCOUNT,
                "namespace": cfg.namespace,
            }
        ],
    }


def _runtime_env(cfg: StackConfig) -> list[dict[str, str]]:
    s = cfg.sessions
    values = {
        "WEBSOCKET_BACKEND": "kubernetes",
        "WEBSOCKET_NAMESPACE": cfg.namespace,
        "WEBSOCKET_SESSION_TEMPLATE_NAME": naming.SESSION_TEMPLATE_NAME,
        "WEBSOCKET_MAX_SESSIONS": str(s.max_sessions),
        "WEBSOCKET_IDLE_TIMEOUT": str(s.idle_timeout_s),
        "WEBSOCKET_MAX_LIFETIME": str(s.max_lifetime_s),
        "HOME": "/tmp",  # noqa: S108 - the writable emptyDir
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def reaper_cronjob(cfg: StackConfig) -> dict[str, Any] | None:
    """Return the CronJob running ``gamgui-session reap``, or None when disabled.

    Its pods carry no ``activeDeadlineSeconds`` (the Job has one), so the
    Terminating-scoped quota never counts them.

    Args:
        cfg: the validated stack config.
    """
    if not cfg.reaper.enabled:
        return None
    labels = common_labels(COMPONENT_REAPER)
    pod_spec = {
        "serviceAccountName": RUNTIME_SERVICE_ACCOUNT,
        "automountServiceAccountToken": True,  # it talks to the API server
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": restricted_pod_security(cfg.session_pod_config().run_as_user),
        "containers": [
            {
                "name": COMPONENT_REAPER,
                "image": cfg.reaper.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["gamgui-session", "reap"],
                "env": _runtime_env(cfg),
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
                "securityContext": restricted_container_security(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(REAPER_NAME, cfg, COMPONENT_REAPER),
        "spec": {
            "schedule": cfg.reaper.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 600,
                    "ttlSecondsAfterFinished": 3600,
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            },
        },
    }


def default_session_deployment(cfg: StackConfig) -> dict[str, Any]:
    """Return the Deployment of the always-available session ``default``.

    Built by stamping the session template with the runtime's own function, then
    made long-lived: a Deployment pod restarts (``Always``), has no
    ``activeDeadlineSeconds`` (so the session quota does not count it) and no idle
    timeout.

    Args:
        cfg: the validated stack config.
    """
    sid = DEFAULT_SESSION_ID
    pod = stamp_session_pod(
        session_template_pod(cfg.session_pod_config(), cfg.namespace),
        session_id=sid,
        namespace=cfg.namespace,
        command=cfg.default_session.command,
        credentials_secret=None,
        created_at=_STAMP_TIME,
    )
    spec = pod["spec"]
    spec.pop("activeDeadlineSeconds", None)
    spec["restartPolicy"] = "Always"
    (agent,) = (c for c in spec["containers"] if c["name"] == naming.SESSION_CONTAINER_NAME)
    for env in agent["env"]:
        if env["name"] == naming.ENV_IDLE_TIMEOUT:
            env["value"] = "0"
    annotations = dict(pod["metadata"]["annotations"])
    annotations.pop(naming.ANNOTATION_CREATED_AT, None)
    labels = pod["metadata"]["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.session_pod_name(sid),
            "namespace": cfg.namespace,
            "labels": {**common_labels(naming.COMPONENT_SESSION), **labels},
        },
        "spec": {
            "replicas": 1,
            # One pod at a time: two pods with one hostname would split DNS answers.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": naming.session_labels(sid)},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": spec,
            },
        },
    }


def default_session_token_secret(cfg: StackConfig) -> dict[str, Any]:
    """Return the default session's token Secret without its ``stringData``.

    The same manifest the runtime creates per session, minus the token (a secret
    Pulumi value the component fills in) and ``immutable`` (so a new token can be set).

    Args:
        cfg: the validated stack config.
    """
    secret = session_token_secret(DEFAULT_SESSION_ID, cfg.namespace, "unset")
    del secret["stringData"]
    secret.pop("immutable", None)
    secret["metadata"]["labels"] = {
        **common_labels(naming.COMPONENT_SESSION),
        **secret["metadata"]["labels"],
    }
    return secret
