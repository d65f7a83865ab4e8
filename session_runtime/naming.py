"""Every name, port, label and path derived from a session id, defined once.

The Pulumi components, the session spec, the nginx renderer, both backends and
the agent import these instead of spelling them out again.
"""

from __future__ import annotations

from session_runtime.ids import validate_session_id

__all__ = [
    "AGENT_EXIT_TOKEN_SPENT",
    "AGENT_PORT",
    "AGENT_PORT_NAME",
    "ANNOTATION_COMMAND",
    "ANNOTATION_CREATED_AT",
    "ANNOTATION_CREDENTIALS_SECRET",
    "APP_NAME",
    "COMPONENT_PROXY",
    "COMPONENT_SESSION",
    "DEFAULT_CREDENTIALS_SECRET",
    "DEFAULT_NAMESPACE",
    "ENV_AGENT_HOST",
    "ENV_AGENT_PORT",
    "ENV_AUDIT_FILE",
    "ENV_COMMAND_TIMEOUT",
    "ENV_CREDENTIALS_DIR",
    "ENV_DETACH_TIMEOUT",
    "ENV_GAMCFGDIR",
    "ENV_GAM_BIN",
    "ENV_GAM_MODE",
    "ENV_IDLE_TIMEOUT",
    "ENV_MAX_CONNECTIONS",
    "ENV_REPLAY_BYTES",
    "ENV_SESSION_COMMAND",
    "ENV_SESSION_ID",
    "ENV_SESSION_TOKEN",
    "ENV_SESSION_TOKEN_FILE",
    "HEADER_USER",
    "HEALTH_PATH",
    "LABEL_COMPONENT",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_PART_OF",
    "LABEL_SESSION_ID",
    "METRICS_PATH",
    "PART_OF",
    "PROXY_METRICS_PORT",
    "PROXY_METRICS_PORT_NAME",
    "PROXY_PORT",
    "PROXY_PORT_NAME",
    "PROXY_SERVICE_NAME",
    "PROXY_STATUS_PATH",
    "PROXY_STATUS_PORT",
    "PROXY_STATUS_PORT_NAME",
    "SESSION_CONTAINER_NAME",
    "SESSION_ID_PLACEHOLDER",
    "SESSION_PATH_PREFIX",
    "SESSION_PATH_TEMPLATE",
    "SESSION_SERVICE_NAME",
    "SESSION_TEMPLATE_NAME",
    "SUBPROTOCOL",
    "TOKEN_BEARER_PREFIX",
    "TOKEN_KEY_SECRET_KEY",
    "TOKEN_KEY_SECRET_NAME",
    "TOKEN_SECRET_KEY",
    "cluster_domain_suffix",
    "proxy_host",
    "session_domain",
    "session_host",
    "session_labels",
    "session_path",
    "session_pod_name",
    "session_selector",
    "session_token_secret_name",
]

# --- protocol and ports -------------------------------------------------------
SUBPROTOCOL = "gamgui.session.v1"
#: Browsers cannot set headers, so the token may ride as a second subprotocol entry.
TOKEN_BEARER_PREFIX = "bearer."
AGENT_PORT = 8080
#: The named container/Service port of the agent (Services and probes refer to it by name).
AGENT_PORT_NAME = "agent"
#: The agent's exit status when its token hand-off was already read: a restarted container
#: of a pod (the hand-off runs once per pod). The reaper replaces such a default-session pod.
AGENT_EXIT_TOKEN_SPENT = 75
#: nginx listens unprivileged in the pod (the image runs as non-root).
PROXY_PORT = 8080
PROXY_PORT_NAME = "http"
#: nginx's ``stub_status``, on its own port that only the monitoring namespace may reach.
PROXY_STATUS_PORT = 8081
PROXY_STATUS_PORT_NAME = "status"
PROXY_STATUS_PATH = "/stub_status"
#: The nginx-prometheus-exporter sidecar's Prometheus endpoint (its default port).
PROXY_METRICS_PORT = 9113
PROXY_METRICS_PORT_NAME = "metrics"
HEALTH_PATH = "/healthz"
#: Prometheus metrics of the agent; like HEALTH_PATH, unauthenticated and not activity.
METRICS_PATH = "/metrics"
#: Optional header the server sets on its WebSocket request to name the user (audit).
HEADER_USER = "X-Gamgui-User"
SESSION_ID_PLACEHOLDER = "{{SESSION_ID}}"
SESSION_PATH_PREFIX = "/ws/session/"
SESSION_PATH_TEMPLATE = f"{SESSION_PATH_PREFIX}{SESSION_ID_PLACEHOLDER}/"

# --- the agent's environment (set by the session spec and the local backend) ------
ENV_SESSION_ID = "SESSION_ID"
ENV_SESSION_TOKEN = "SESSION_TOKEN"
ENV_SESSION_TOKEN_FILE = "SESSION_TOKEN_FILE"
ENV_AGENT_HOST = "SESSION_AGENT_HOST"
ENV_AGENT_PORT = "SESSION_AGENT_PORT"
ENV_GAM_BIN = "GAM_BIN"
ENV_SESSION_COMMAND = "SESSION_COMMAND"
ENV_IDLE_TIMEOUT = "SESSION_IDLE_TIMEOUT"
ENV_MAX_CONNECTIONS = "SESSION_MAX_CONNECTIONS"
ENV_COMMAND_TIMEOUT = "SESSION_COMMAND_TIMEOUT"
ENV_CREDENTIALS_DIR = "GAM_CREDENTIALS_DIR"
ENV_GAMCFGDIR = "GAMCFGDIR"
#: Bytes of each command's messages kept for replay to re-attaching clients.
ENV_REPLAY_BYTES = "SESSION_REPLAY_BYTES"
#: Seconds a command with no client attached keeps running before it is cancelled.
ENV_DETACH_TIMEOUT = "SESSION_DETACH_TIMEOUT"
#: ``warm`` (fork from a process that imported GAM once) or ``cold`` (exec per command).
ENV_GAM_MODE = "SESSION_GAM_MODE"
#: Optional file the agent appends its audit lines to (besides stdout).
ENV_AUDIT_FILE = "SESSION_AUDIT_FILE"

# --- Kubernetes names ---------------------------------------------------------
DEFAULT_NAMESPACE = "gamgui"
PROXY_SERVICE_NAME = "websocket-proxy"
#: The headless Service that gives session pods DNS names.
SESSION_SERVICE_NAME = "gamgui-sessions"
#: The PodTemplate the runtime stamps sessions from.
SESSION_TEMPLATE_NAME = "gamgui-session"
SESSION_CONTAINER_NAME = "agent"
DEFAULT_CREDENTIALS_SECRET = "gam-credentials"
TOKEN_SECRET_KEY = "token"
#: The Secret holding the runtime's key that session tokens are derived from.
TOKEN_KEY_SECRET_NAME = "gamgui-session-token-key"
#: The key in that Secret (and the variable a server may set from it instead).
TOKEN_KEY_SECRET_KEY = "key"

# --- labels and annotations ---------------------------------------------------
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SESSION_ID = "gamgui.io/session-id"
APP_NAME = "gamgui-websocket"
PART_OF = "gamgui"
COMPONENT_SESSION = "session"
COMPONENT_PROXY = "proxy"
ANNOTATION_CREATED_AT = "gamgui.io/created-at"
ANNOTATION_COMMAND = "gamgui.io/command"
ANNOTATION_CREDENTIALS_SECRET = "gamgui.io/credentials-secret"


def cluster_domain_suffix(namespace: str, cluster_domain: str = "cluster.local") -> str:
    """Return ``<namespace>.svc.<cluster_domain>``."""
    return f"{namespace}.svc.{cluster_domain}"


def session_domain(
    namespace: str = DEFAULT_NAMESPACE, cluster_domain: str = "cluster.local"
) -> str:
    """Return the DNS domain under which every session pod gets a name."""
    return f"{SESSION_SERVICE_NAME}.{cluster_domain_suffix(namespace, cluster_domain)}"


def session_host(
    session_id: str, namespace: str = DEFAULT_NAMESPACE, cluster_domain: str = "cluster.local"
) -> str:
    """Return the session pod's DNS name (``hostname`` + ``subdomain`` + namespace)."""
    return f"{validate_session_id(session_id)}.{session_domain(namespace, cluster_domain)}"


def proxy_host(namespace: str = DEFAULT_NAMESPACE, cluster_domain: str = "cluster.local") -> str:
    """Return the proxy Service's in-cluster DNS name."""
    return f"{PROXY_SERVICE_NAME}.{cluster_domain_suffix(namespace, cluster_domain)}"


def session_path(session_id: str) -> str:
    """Return the WebSocket path of a session on the proxy and on the agent."""
    return SESSION_PATH_TEMPLATE.replace(SESSION_ID_PLACEHOLDER, validate_session_id(session_id))


def session_pod_name(session_id: str) -> str:
    """Return the Pod name of a session (ids are <= 63 chars, names may be 253)."""
    return f"gamgui-session-{validate_session_id(session_id)}"


def session_token_secret_name(session_id: str) -> str:
    """Return the name of the Secret holding a session's token."""
    return f"gamgui-session-{validate_session_id(session_id)}-token"


def session_selector() -> dict[str, str]:
    """Return the labels that select every session pod (and nothing else)."""
    return {LABEL_NAME: APP_NAME, LABEL_COMPONENT: COMPONENT_SESSION}


def session_labels(session_id: str) -> dict[str, str]:
    """Return the full label set of one session's objects."""
    return {
        **session_selector(),
        LABEL_PART_OF: PART_OF,
        LABEL_SESSION_ID: validate_session_id(session_id),
    }
