"""The stack configuration, validated into one pydantic model before anything is declared.

Stack config keys are flat camelCase names (``maxSessions``, ``proxyImage``),
as ``pulumi config set`` and the ``config:`` block of ``Pulumi.yaml`` want them;
:data:`CONFIG_KEYS` maps each to its place in the nested model. A bad or missing
value stops the program with :class:`StackConfigError` naming the key, e.g.
``gamgui-websocket:maxSessions: Input should be greater than 0``.

The model's defaults are the ones ``Pulumi.yaml`` declares (a test keeps the two
equal), so the program behaves the same with or without the CLI filling them in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.images import image_problem
from session_runtime import naming
from session_runtime.ids import validate_session_id
from session_runtime.nginx import DEFAULT_CONNECTIONS_PER_CLIENT, RESOLVER_VALID_S, NginxConfig
from session_runtime.spec import ResourceSpec, SessionPodConfig, validate_dns_subdomain

__all__ = [
    "CONFIG_KEYS",
    "PROJECT",
    "SECRET_KEYS",
    "DefaultSessionConfig",
    "KubernetesConfig",
    "ProxyConfig",
    "ReaperConfig",
    "SessionsConfig",
    "StackConfig",
    "StackConfigError",
    "load_stack_config",
]

PROJECT = "gamgui-websocket"
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_CRON = re.compile(r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")


class StackConfigError(ValueError):
    """The stack configuration is invalid; the message names every bad key."""


def _pinned(value: str) -> str:
    problem = image_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProxyConfig(_Model):
    """The nginx WebSocket proxy."""

    image: str = "nginxinc/nginx-unprivileged:1.27.4-alpine"
    replicas: int = Field(2, ge=1, le=50)
    resources: ResourceSpec = ResourceSpec(
        cpu_request="100m", memory_request="64Mi", cpu_limit="1", memory_limit="256Mi"
    )
    resolver: str = "kube-dns.kube-system.svc.cluster.local"
    resolver_valid_s: int = Field(RESOLVER_VALID_S, ge=1, le=3600)
    connect_timeout_s: int = Field(5, ge=1, le=300)
    read_timeout_s: int = Field(28800, ge=1)
    send_timeout_s: int = Field(28800, ge=1)
    #: Connections one client address may hold (the server may be that one address).
    connections_per_client: int = Field(DEFAULT_CONNECTIONS_PER_CLIENT, ge=1, le=1_048_576)
    exposure: Literal["none", "ingress", "loadbalancer"] = "none"
    ingress_host: str | None = None
    ingress_tls_secret: str | None = None
    ingress_class_name: str | None = None
    #: nginx ``stub_status`` on its own port, reachable only from ``monitoring_namespace``.
    metrics_enabled: bool = True
    #: Sidecar turning stub_status into Prometheus metrics (scraped via ``prometheus.io/*``).
    metrics_exporter_image: str = "nginx/nginx-prometheus-exporter:1.3.0"
    #: The namespace whose pods (Prometheus) may reach the metrics ports.
    monitoring_namespace: str = "monitoring"

    @field_validator("image", "metrics_exporter_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _pinned(value)

    @field_validator("monitoring_namespace")
    @classmethod
    def _monitoring_namespace(cls, value: str) -> str:
        validate_session_id(value)  # a namespace is one DNS label
        return value

    @field_validator("ingress_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value:
            validate_dns_subdomain(value, "ingress host")
        return value or None

    @field_validator("ingress_tls_secret", "ingress_class_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value:
            validate_dns_subdomain(value)
        return value or None


class SessionsConfig(_Model):
    """Session pods: image, limits, lifetimes, credentials, scheduling."""

    image: str = "ghcr.io/gamgui/gamgui-session:0.1.0"
    agent_port: int = Field(naming.AGENT_PORT, ge=1024, le=65535)
    max_sessions: int = Field(50, ge=1, le=10000)
    idle_timeout_s: int = Field(1800, ge=60)
    command_timeout_s: int = Field(3600, ge=1)
    max_lifetime_s: int = Field(28800, ge=60)
    resources: ResourceSpec = ResourceSpec()
    credentials_secret: str = naming.DEFAULT_CREDENTIALS_SECRET
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _pinned(value)

    @field_validator("credentials_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return validate_dns_subdomain(value, "credentials secret")

    @field_validator("node_selector", mode="before")
    @classmethod
    def _node_selector(cls, value: object) -> object:
        """Accept ``["key=value", ...]`` (the stack-config form) or a mapping."""
        if isinstance(value, list):
            pairs: dict[str, str] = {}
            for item in value:
                if not isinstance(item, str) or "=" not in item:
                    raise ValueError(f"entries must look like key=value (got {item!r})")
                key, _, val = item.partition("=")
                pairs[key] = val
            value = pairs
        if isinstance(value, dict):
            for key, val in value.items():
                if not _LABEL_KEY.fullmatch(str(key)) or not _LABEL_VALUE.fullmatch(str(val)):
                    raise ValueError(f"{key}={val} is not a valid label selector entry")
        return value

    @field_validator("tolerations", mode="before")
    @classmethod
    def _tolerations(cls, value: object) -> object:
        """Accept ``["key=value:Effect", "key:Effect", "key"]`` (kubectl taint syntax)."""
        if not isinstance(value, list):
            return value
        out: list[object] = []
        for item in value:
            if not isinstance(item, str):
                out.append(item)
                continue
            spec, _, effect = item.partition(":")
            key, eq, val = spec.partition("=")
            if not key or not _LABEL_KEY.fullmatch(key):
                raise ValueError(f"toleration {item!r} needs a valid key")
            if effect and effect not in _TAINT_EFFECTS:
                raise ValueError(f"toleration {item!r}: effect must be one of {_TAINT_EFFECTS}")
            toleration = {"key": key, "operator": "Equal" if eq else "Exists"}
            if eq:
                toleration["value"] = val
            if effect:
                toleration["effect"] = effect
            out.append(toleration)
        return out


class DefaultSessionConfig(_Model):
    """The always-available session ``default`` (a Deployment)."""

    enabled: bool = True
    command: str | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL bytes")
        return value or None


class ReaperConfig(_Model):
    """The CronJob that runs ``gamgui-session reap``."""

    enabled: bool = True
    schedule: str = "*/5 * * * *"
    #: Image with the ``gamgui-session`` CLI and the Kubernetes client: the ``tools``
    #: target of session_image/Dockerfile (the session image has no Kubernetes client).
    image: str = "ghcr.io/gamgui/gamgui-runtime:0.1.0"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not _CRON.fullmatch(value.strip()):
            raise ValueError(f"must be a cron schedule like '*/5 * * * *' (got {value!r})")
        return value.strip()

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _pinned(value)


class KubernetesConfig(_Model):
    """How the Kubernetes provider reaches (or does not reach) a cluster."""

    kubeconfig: str | None = None
    context: str | None = None
    #: Write manifests to this directory instead of applying them to a cluster.
    render_yaml_to_directory: str | None = None


class StackConfig(_Model):
    """The whole stack configuration."""

    namespace: str
    create_namespace: bool = True
    cluster_domain: str = "cluster.local"
    proxy: ProxyConfig = ProxyConfig()
    sessions: SessionsConfig = SessionsConfig()
    default_session: DefaultSessionConfig = DefaultSessionConfig()
    reaper: ReaperConfig = ReaperConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        validate_session_id(value)  # a namespace is one DNS label too
        return value

    @field_validator("cluster_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return validate_dns_subdomain(value, "cluster domain")

    @model_validator(mode="after")
    def _exposure(self) -> StackConfig:
        if self.proxy.exposure == "ingress" and not self.proxy.ingress_host:
            raise ValueError("ingressHost is required when exposure is 'ingress'")
        return self

    # --- derived configs of the pure builders -------------------------------------
    def session_pod_config(self) -> SessionPodConfig:
        """Return the session pod settings the template and the default session use."""
        s = self.sessions
        return SessionPodConfig(
            image=s.image,
            agent_port=s.agent_port,
            idle_timeout_s=s.idle_timeout_s,
            command_timeout_s=s.command_timeout_s,
            max_lifetime_s=s.max_lifetime_s,
            resources=s.resources,
            node_selector=s.node_selector,
            tolerations=list(s.tolerations),
            credentials_secret=s.credentials_secret,
        )

    def nginx_config(self) -> NginxConfig:
        """Return the proxy's nginx settings (the same renderer the local stack uses)."""
        p = self.proxy
        return NginxConfig(
            resolver=p.resolver,
            resolver_valid_s=p.resolver_valid_s,
            session_domain=naming.session_domain(self.namespace, self.cluster_domain),
            agent_port=self.sessions.agent_port,
            connect_timeout_s=p.connect_timeout_s,
            read_timeout_s=p.read_timeout_s,
            send_timeout_s=p.send_timeout_s,
            connections_per_client=p.connections_per_client,
            status_port=naming.PROXY_STATUS_PORT if p.metrics_enabled else None,
        )


#: Stack-config key -> path in :class:`StackConfig`.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "namespace": ("namespace",),
    "createNamespace": ("create_namespace",),
    "clusterDomain": ("cluster_domain",),
    "proxyImage": ("proxy", "image"),
    "proxyReplicas": ("proxy", "replicas"),
    "proxyCpuRequest": ("proxy", "resources", "cpu_request"),
    "proxyMemoryRequest": ("proxy", "resources", "memory_request"),
    "proxyCpuLimit": ("proxy", "resources", "cpu_limit"),
    "proxyMemoryLimit": ("proxy", "resources", "memory_limit"),
    "proxyResolver": ("proxy", "resolver"),
    "proxyResolverValid": ("proxy", "resolver_valid_s"),
    "proxyConnectTimeout": ("proxy", "connect_timeout_s"),
    "proxyReadTimeout": ("proxy", "read_timeout_s"),
    "proxySendTimeout": ("proxy", "send_timeout_s"),
    "proxyConnectionsPerClient": ("proxy", "connections_per_client"),
    "exposure": ("proxy", "exposure"),
    "ingressHost": ("proxy", "ingress_host"),
    "ingressTlsSecret": ("proxy", "ingress_tls_secret"),
    "ingressClassName": ("proxy", "ingress_class_name"),
    "proxyMetrics": ("proxy", "metrics_enabled"),
    "proxyMetricsExporterImage": ("proxy", "metrics_exporter_image"),
    "monitoringNamespace": ("proxy", "monitoring_namespace"),
    "sessionImage": ("sessions", "image"),
    "agentPort": ("sessions", "agent_port"),
    "maxSessions": ("sessions", "max_sessions"),
    "idleTimeout": ("sessions", "idle_timeout_s"),
    "commandTimeout": ("sessions", "command_timeout_s"),
    "maxLifetime": ("sessions", "max_lifetime_s"),
    "sessionCpuRequest": ("sessions", "resources", "cpu_request"),
    "sessionMemoryRequest": ("sessions", "resources", "memory_request"),
    "sessionCpuLimit": ("sessions", "resources", "cpu_limit"),
    "sessionMemoryLimit": ("sessions", "resources", "memory_limit"),
    "credentialsSecret": ("sessions", "credentials_secret"),
    "sessionNodeSelector": ("sessions", "node_selector"),
    "sessionTolerations": ("sessions", "tolerations"),
    "defaultSessionEnabled": ("default_session", "enabled"),
    "defaultSessionCommand": ("default_session", "command"),
    "reaperEnabled": ("reaper", "enabled"),
    "reaperSchedule": ("reaper", "schedule"),
    "reaperImage": ("reaper", "image"),
    "kubeconfig": ("kubernetes", "kubeconfig"),
    "kubeContext": ("kubernetes", "context"),
    "renderYamlToDirectory": ("kubernetes", "render_yaml_to_directory"),
}
#: Secret keys, read with ``get_secret`` and never part of the model.
SECRET_KEYS = ("defaultSessionToken",)
#: Keys whose stack-config value is a JSON array.
_ARRAY_KEYS = frozenset({"sessionNodeSelector", "sessionTolerations"})
_PATH_TO_KEY = {path: key for key, path in CONFIG_KEYS.items()}


def _key_for(loc: tuple[int | str, ...]) -> str:
    """Map a pydantic error location to the stack-config key (longest known prefix)."""
    parts = tuple(str(p) for p in loc)
    for end in range(len(parts), 0, -1):
        if parts[:end] in _PATH_TO_KEY:
            return _PATH_TO_KEY[parts[:end]]
    return ".".join(parts) or "config"


def _decode(key: str, raw: object) -> object:
    if key in _ARRAY_KEYS and isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise StackConfigError(f"{PROJECT}:{key}: must be a JSON array") from None
    return raw


def load_stack_config(values: Mapping[str, object], project: str = PROJECT) -> StackConfig:
    """Validate raw stack-config values (as ``pulumi.Config`` returns them) into the model.

    Args:
        values: key -> raw value (strings; arrays as JSON) for every key that is set.
        project: the config namespace, for messages.

    Raises:
        StackConfigError: naming each bad key (``<project>:<key>: <problem>``).
    """
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise StackConfigError("; ".join(f"{project}:{key}: unknown config key" for key in unknown))
    tree: dict[str, Any] = {}
    for key, raw in values.items():
        if raw is None or raw == "":
            continue
        node = tree
        *parents, leaf = CONFIG_KEYS[key]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _decode(key, raw)
    try:
        return StackConfig.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"]:
                problems.append(f"{project}:{_key_for(err['loc'])}: {msg}")
            else:
                problems.append(f"{project}: {msg}")
        raise StackConfigError("; ".join(problems)) from None
