"""The stack outputs the gamgui server needs, as pure functions of the stack config."""

from __future__ import annotations

from components.config import StackConfig
from session_runtime import naming
from session_runtime.ids import DEFAULT_SESSION_ID
from session_runtime.settings import ENV_PREFIX

__all__ = ["dotenv", "proxy_url", "session_url", "websocket_env"]


def proxy_url(cfg: StackConfig) -> str:
    """Return the proxy's in-cluster base URL (the Service listens on port 80).

    Args:
        cfg: the validated stack config.
    """
    return f"http://{naming.proxy_host(cfg.namespace, cfg.cluster_domain)}"


def session_url(cfg: StackConfig, session_id: str = DEFAULT_SESSION_ID) -> str:
    """Return a session's in-cluster WebSocket URL through the proxy.

    Args:
        cfg: the validated stack config.
        session_id: the session id (validated).
    """
    host = naming.proxy_host(cfg.namespace, cfg.cluster_domain)
    return f"ws://{host}{naming.session_path(session_id)}"


def websocket_env(cfg: StackConfig) -> dict[str, str]:
    """Return the exact ``WEBSOCKET_*`` settings a gamgui server in this cluster needs.

    Args:
        cfg: the validated stack config.
    """
    host = naming.proxy_host(cfg.namespace, cfg.cluster_domain)
    s = cfg.sessions
    values = {
        "ENABLED": "true",
        "BACKEND": "kubernetes",
        "NAMESPACE": cfg.namespace,
        "PROXY_SERVICE_URL": host,
        "SESSION_CONNECTION_TEMPLATE": f"ws://{host}{naming.SESSION_PATH_TEMPLATE}",
        "SESSION_PATH_TEMPLATE": naming.SESSION_PATH_TEMPLATE,
        "MAX_SESSIONS": str(s.max_sessions),
        "SESSION_TEMPLATE_NAME": naming.SESSION_TEMPLATE_NAME,
        "DEFAULT_CREDENTIALS_SECRET": s.credentials_secret,
        "IDLE_TIMEOUT": str(s.idle_timeout_s),
        "COMMAND_TIMEOUT": str(s.command_timeout_s),
        "MAX_LIFETIME": str(s.max_lifetime_s),
    }
    return {f"{ENV_PREFIX}{key}": value for key, value in values.items()}


def dotenv(values: dict[str, str]) -> str:
    """Return ``KEY=value`` lines for a ``.env`` file (values here never need quoting).

    Args:
        values: the variables, e.g. from :func:`websocket_env`.
    """
    return "".join(f"{key}={value}\n" for key, value in values.items())
