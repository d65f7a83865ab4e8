"""The session pod, as pure functions on plain JSON-shaped manifests.

One source for the cluster and the runtime: the Pulumi session template stores
:func:`session_template_pod` in a ``PodTemplate``; the Kubernetes backend reads
that template back and calls :func:`stamp_session_pod` for every new session;
the default session's Deployment is stamped by the same function. Nothing here
touches a cluster, a process or Pulumi, so all of it is tested as plain data.

The template holds everything that does not depend on a session (image,
hardening, probes, resources, credentials volume, timeouts). Stamping adds what
does: names, labels, annotations, ``hostname``/``subdomain``, the agent's
``SESSION_ID``/``SESSION_COMMAND`` and the token Secret volume. The token volume
cannot live in the template because a secret volume needs a ``secretName``.

Credentials: the Secret (``gam-credentials`` unless a session names another) is
mounted read-only as a directory, never with ``subPath``, and marked
``optional: true``. A session without credentials still starts, its health
endpoint reports ``credentials_found: false`` and GAM prints its own, precise
error on the first command, instead of the pod hanging in ``ContainerCreating``
with an event only a cluster admin can read.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from session_runtime import naming
from session_runtime.errors import InvalidNameError
from session_runtime.ids import validate_session_id

__all__ = [
    "CREDENTIALS_DIR",
    "CREDENTIALS_VOLUME",
    "GAMCFG_DIR",
    "GAMCFG_VOLUME",
    "TMP_VOLUME",
    "TOKEN_DIR",
    "TOKEN_VOLUME",
    "ResourceSpec",
    "SessionPodConfig",
    "restricted_container_security",
    "restricted_pod_security",
    "session_template_pod",
    "session_token_secret",
    "stamp_session_pod",
    "validate_dns_subdomain",
]

#: Where the credentials Secret is mounted (read-only directory, never subPath).
CREDENTIALS_DIR = "/etc/gamgui/credentials"
#: Where the session's token Secret is mounted (read-only directory).
TOKEN_DIR = "/etc/gamgui/token"
#: GAM's writable config directory: a memory-backed emptyDir the agent fills with mode 0600.
GAMCFG_DIR = "/var/run/gamgui/gamcfg"
CREDENTIALS_VOLUME = "gam-credentials"
TOKEN_VOLUME = "session-token"
GAMCFG_VOLUME = "gamcfg"
TMP_VOLUME = "tmp"


def restricted_pod_security(uid: int, gid: int | None = None) -> dict[str, Any]:
    """Return a pod securityContext meeting the ``restricted`` Pod Security Standard.

    Args:
        uid: the non-root user the pod runs as.
        gid: its group (and ``fsGroup``); defaults to ``uid``.
    """
    group = uid if gid is None else gid
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": group,
        "fsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    """Return a container securityContext: non-root, read-only root, nothing extra."""
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_MAX_COMMAND_LENGTH = 16 * 1024


def validate_dns_subdomain(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid Kubernetes object name (RFC 1123 subdomain).

    Args:
        value: the candidate name.
        what: what the name is, for the error message.

    Raises:
        InvalidNameError: naming ``what`` and the rule (a ``ValueError``).
    """
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise InvalidNameError(
            f"Invalid {what} {value!r}",
            hint="a Kubernetes name: lower-case letters, digits, '-' and '.', <= 253 characters",
        )
    return value


class ResourceSpec(BaseModel):
    """CPU/memory requests and limits of one container (Kubernetes quantities)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_request: str = "100m"
    #: The agent and a cold GAM command took 128Mi; the warm-GAM zygote adds its
    #: RSS (76.5 MiB measured with gam7 7.49, see BENCHMARKS.md), rounded up.
    memory_request: str = "208Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"

    @field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.fullmatch(value):
            raise ValueError(f"must be a Kubernetes quantity like 100m, 1, 256Mi (got {value!r})")
        return value

    def to_manifest(self) -> dict[str, dict[str, str]]:
        """Return the container's ``resources`` block."""
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


class SessionPodConfig(BaseModel):
    """Everything the session pod template depends on; validated once, then frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(min_length=1, description="Pinned session image (tag or digest).")
    image_pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    agent_port: int = Field(naming.AGENT_PORT, ge=1024, le=65535)
    idle_timeout_s: int = Field(1800, ge=0, description="Idle seconds before the agent exits.")
    command_timeout_s: int = Field(3600, gt=0, description="Seconds one command may run.")
    max_lifetime_s: int = Field(28800, gt=0, description="activeDeadlineSeconds of a session.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    service_account_name: str = "gamgui-session"
    credentials_secret: str = naming.DEFAULT_CREDENTIALS_SECRET
    gam_bin: str | None = Field(None, description="GAM executable; None lets the agent decide.")
    run_as_user: int = Field(10001, ge=1)
    run_as_group: int = Field(10001, ge=1)
    gamcfg_size_limit: str = "16Mi"
    tmp_size_limit: str = "256Mi"
    termination_grace_period_s: int = Field(10, ge=0)

    @field_validator("service_account_name", "credentials_secret")
    @classmethod
    def _k8s_name(cls, value: str) -> str:
        return validate_dns_subdomain(value)

    @field_validator("gamcfg_size_limit", "tmp_size_limit")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _QUANTITY.fullmatch(value):
            raise ValueError(f"must be a Kubernetes quantity like 16Mi (got {value!r})")
        return value


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def session_template_pod(config: SessionPodConfig, namespace: str) -> dict[str, Any]:
    """Return the ``template`` of the session PodTemplate: ``{"metadata", "spec"}``.

    Args:
        config: the validated session pod settings.
        namespace: the namespace sessions run in (a DNS label).

    Raises:
        InvalidSessionIdError: when ``namespace`` is not a DNS label.
    """
    validate_session_id(namespace)  # a namespace follows the DNS-label rule too
    env = [
        _env(naming.ENV_AGENT_HOST, "0.0.0.0"),  # noqa: S104 - the pod's own interfaces
        _env(naming.ENV_AGENT_PORT, str(config.agent_port)),
        _env(naming.ENV_IDLE_TIMEOUT, str(config.idle_timeout_s)),
        _env(naming.ENV_COMMAND_TIMEOUT, str(config.command_timeout_s)),
        _env(naming.ENV_CREDENTIALS_DIR, CREDENTIALS_DIR),
        _env(naming.ENV_GAMCFGDIR, GAMCFG_DIR),
        _env("HOME", "/tmp"),  # noqa: S108 - the writable emptyDir, root fs is read-only
    ]
    if config.gam_bin:
        env.append(_env(naming.ENV_GAM_BIN, config.gam_bin))
    probe = {
        "httpGet": {"path": naming.HEALTH_PATH, "port": naming.AGENT_PORT_NAME},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
    }
    container: dict[str, Any] = {
        "name": naming.SESSION_CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "session_runtime.agent"],
        "ports": [
            {"name": naming.AGENT_PORT_NAME, "containerPort": config.agent_port, "protocol": "TCP"}
        ],
        "env": env,
        "resources": config.resources.to_manifest(),
        "readinessProbe": {**probe, "failureThreshold": 3},
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True},
            {"name": GAMCFG_VOLUME, "mountPath": GAMCFG_DIR},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108
        ],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": config.max_lifetime_s,
        "terminationGracePeriodSeconds": config.termination_grace_period_s,
        "serviceAccountName": config.service_account_name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "subdomain": naming.SESSION_SERVICE_NAME,
        "securityContext": restricted_pod_security(config.run_as_user, config.run_as_group),
        "containers": [container],
        "volumes": [
            {
                "name": CREDENTIALS_VOLUME,
                "secret": {
                    "secretName": config.credentials_secret,
                    "optional": True,
                    "defaultMode": 0o440,
                },
            },
            {
                "name": GAMCFG_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": config.gamcfg_size_limit},
            },
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": config.tmp_size_limit}},
        ],
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = copy.deepcopy(config.tolerations)
    labels = {**naming.session_selector(), naming.LABEL_PART_OF: naming.PART_OF}
    return {"metadata": {"labels": labels}, "spec": spec}


def _agent_container(spec: dict[str, Any]) -> dict[str, Any]:
    for container in spec.get("containers", []):
        if container.get("name") == naming.SESSION_CONTAINER_NAME:
            return container  # type: ignore[no-any-return]
    raise ValueError(
        f"the session template has no container named {naming.SESSION_CONTAINER_NAME!r}"
    )


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in container.get("env", []) if e.get("name") != name]
    env.append(_env(name, value))
    container["env"] = env


def _validate_command(command: str | None) -> str | None:
    if command is None:
        return None
    if not isinstance(command, str) or "\x00" in command or len(command) > _MAX_COMMAND_LENGTH:
        raise ValueError(
            f"command must be text without NUL bytes, at most {_MAX_COMMAND_LENGTH} characters"
        )
    return command if command.strip() else None


def stamp_session_pod(
    template: dict[str, Any],
    *,
    session_id: str,
    namespace: str,
    command: str | None,
    credentials_secret: str | None,
    created_at: datetime,
) -> dict[str, Any]:
    """Return the full Pod manifest of one session, built from the template.

    The template is not modified. The result is a complete ``v1/Pod``.

    Args:
        template: a ``{"metadata", "spec"}`` dict as :func:`session_template_pod` returns
            (or as read back from the PodTemplate in the cluster).
        session_id: the session id (validated; becomes the pod's ``hostname``).
        namespace: the namespace of the pod.
        command: an initial GAM command for the agent, or None.
        credentials_secret: the credentials Secret to mount instead of the template's,
            or None to keep the template's.
        created_at: creation time; naive datetimes are taken as UTC.

    Raises:
        InvalidSessionIdError: for a bad session id or namespace.
        InvalidNameError: for a bad credentials secret name.
        ValueError: for a bad command, or a template without the agent container.
    """
    sid = validate_session_id(session_id)
    validate_session_id(namespace)
    command = _validate_command(command)
    if credentials_secret is not None:
        validate_dns_subdomain(credentials_secret, "credentials secret")
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)

    source_meta = template.get("metadata") or {}
    spec: dict[str, Any] = copy.deepcopy(template.get("spec") or {})
    container = _agent_container(spec)

    volumes: list[dict[str, Any]] = [
        v for v in spec.get("volumes", []) if v.get("name") != TOKEN_VOLUME
    ]
    effective_secret = credentials_secret
    for volume in volumes:
        if volume.get("name") == CREDENTIALS_VOLUME and "secret" in volume:
            if credentials_secret is not None:
                volume["secret"]["secretName"] = credentials_secret
            effective_secret = volume["secret"].get("secretName")
    volumes.append(
        {
            "name": TOKEN_VOLUME,
            "secret": {
                "secretName": naming.session_token_secret_name(sid),
                "defaultMode": 0o440,
                "items": [{"key": naming.TOKEN_SECRET_KEY, "path": naming.TOKEN_SECRET_KEY}],
            },
        }
    )
    spec["volumes"] = volumes
    mounts = [m for m in container.get("volumeMounts", []) if m.get("name") != TOKEN_VOLUME]
    mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
    container["volumeMounts"] = mounts

    _set_env(container, naming.ENV_SESSION_ID, sid)
    _set_env(container, naming.ENV_SESSION_TOKEN_FILE, f"{TOKEN_DIR}/{naming.TOKEN_SECRET_KEY}")
    container["env"] = [e for e in container["env"] if e.get("name") != naming.ENV_SESSION_TOKEN]
    if command is not None:
        _set_env(container, naming.ENV_SESSION_COMMAND, command)
    else:
        container["env"] = [
            e for e in container["env"] if e.get("name") != naming.ENV_SESSION_COMMAND
        ]

    spec["hostname"] = sid
    spec["subdomain"] = naming.SESSION_SERVICE_NAME

    annotations = dict(source_meta.get("annotations") or {})
    annotations[naming.ANNOTATION_CREATED_AT] = (
        created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    )
    if command is not None:
        annotations[naming.ANNOTATION_COMMAND] = command
    if effective_secret:
        annotations[naming.ANNOTATION_CREDENTIALS_SECRET] = effective_secret
    labels = {**(source_meta.get("labels") or {}), **naming.session_labels(sid)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": naming.session_pod_name(sid),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def session_token_secret(session_id: str, namespace: str, token: str) -> dict[str, Any]:
    """Return the Secret manifest that holds a session's token (key ``token``).

    The Kubernetes backend adds an ownerReference to the session's Pod once that exists.

    Args:
        session_id: the session id (validated).
        namespace: the namespace of the session.
        token: the session's bearer token (never logged).

    Raises:
        InvalidSessionIdError: for a bad session id or namespace.
        ValueError: for an empty token.
    """
    sid = validate_session_id(session_id)
    validate_session_id(namespace)
    if not isinstance(token, str) or not token.strip():
        raise ValueError("a session token must be a non-empty string")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": naming.session_token_secret_name(sid),
            "namespace": namespace,
            "labels": naming.session_labels(sid),
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": {naming.TOKEN_SECRET_KEY: token},
    }
