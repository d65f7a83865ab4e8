"""Server-side settings: the WEBSOCKET_* variables, from the environment or ``.env``.

Bad values stop start-up with a :class:`~session_runtime.errors.SettingsError`
naming the variable and what is allowed, instead of failing later mid-request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from session_runtime import naming
from session_runtime.errors import SettingsError
from session_runtime.ids import validate_session_id
from session_runtime.nginx import DEFAULT_CONNECTIONS_PER_CLIENT

__all__ = ["ENV_PREFIX", "WebSocketSettings", "default_state_dir", "load_settings"]

ENV_PREFIX = "WEBSOCKET_"
_DEFAULT_PROXY_HOST = naming.proxy_host()


def default_state_dir() -> Path:
    """Return where the local stack keeps its state: ``$XDG_STATE_HOME/gamgui-websocket``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gamgui-websocket"


def _require_placeholder(name: str, value: str) -> str:
    if naming.SESSION_ID_PLACEHOLDER not in value:
        raise ValueError(f"must contain {naming.SESSION_ID_PLACEHOLDER} (got {value!r})")
    return value


class WebSocketSettings(BaseSettings):
    """Every setting the runtime reads. Field docs are the configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    enabled: bool = Field(True, description="Master switch; false makes every call fail fast.")
    proxy_service_url: str = Field(
        _DEFAULT_PROXY_HOST,
        description="The WebSocket proxy: host[:port] or an http(s)/ws(s) URL.",
    )
    session_connection_template: str = Field(
        f"ws://{_DEFAULT_PROXY_HOST}{naming.SESSION_PATH_TEMPLATE}",
        description="Full WebSocket URL of a session; every {{SESSION_ID}} is replaced.",
    )
    session_path_template: str = Field(
        naming.SESSION_PATH_TEMPLATE,
        description="Path of a session on the proxy; every {{SESSION_ID}} is replaced.",
    )
    max_sessions: int = Field(50, gt=0, description="Most sessions alive at once.")
    backend: Literal["local", "kubernetes"] = Field(
        "local", description="Where sessions run: the local stack, or a Kubernetes namespace."
    )
    local_state_dir: Path = Field(
        default_factory=default_state_dir, description="State directory of the local stack."
    )
    proxy_connections_per_client: int = Field(
        DEFAULT_CONNECTIONS_PER_CLIENT,
        ge=1,
        le=1_048_576,
        description="Connections one client address may hold at the local stack's proxy.",
    )
    namespace: str = Field(naming.DEFAULT_NAMESPACE, description="Kubernetes namespace.")
    kube_context: str | None = Field(None, description="kubeconfig context (default: current).")
    session_template_name: str = Field(
        naming.SESSION_TEMPLATE_NAME, description="PodTemplate sessions are stamped from."
    )
    default_credentials_secret: str = Field(
        naming.DEFAULT_CREDENTIALS_SECRET, description="Secret with GAM credentials."
    )
    start_timeout: float = Field(180.0, gt=0, description="Seconds for a session to get ready.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds for one WebSocket handshake.")
    command_timeout: float = Field(3600.0, gt=0, description="Seconds one command may run.")
    idle_timeout: float = Field(1800.0, gt=0, description="Idle seconds before a session ends.")
    max_lifetime: float = Field(28800.0, gt=0, description="Hard lifetime of a session, seconds.")
    session_token_key: SecretStr | None = Field(
        None,
        description="Key session tokens are derived from (Kubernetes; default: read the "
        "gamgui-session-token-key Secret by name). Set it from that Secret with secretKeyRef.",
    )

    @field_validator("session_connection_template")
    @classmethod
    def _connection_template(cls, value: str) -> str:
        _require_placeholder("session_connection_template", value)
        scheme = urlsplit(value.replace(naming.SESSION_ID_PLACEHOLDER, "x")).scheme
        if scheme not in ("ws", "wss"):
            raise ValueError(f"must be a ws:// or wss:// URL (got {value!r})")
        return value

    @field_validator("session_path_template")
    @classmethod
    def _path_template(cls, value: str) -> str:
        _require_placeholder("session_path_template", value)
        if not value.startswith("/"):
            raise ValueError(f"must start with '/' (got {value!r})")
        return value

    @field_validator("proxy_service_url")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        value = value.strip()
        candidate = value if "://" in value else f"http://{value}"
        parts = urlsplit(candidate)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(f"must be host[:port] or an http(s)/ws(s) URL (got {value!r})")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"has an invalid port (got {value!r})") from exc
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        validate_session_id(value)  # a namespace follows the same DNS-label rule
        return value

    # --- derived values --------------------------------------------------------
    @property
    def proxy_http_url(self) -> str:
        """The proxy as an http(s) base URL without a trailing slash (for health checks)."""
        value = self.proxy_service_url
        if "://" not in value:
            value = f"http://{value}"
        scheme, rest = value.split("://", 1)
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return f"{scheme}://{rest}".rstrip("/")

    def session_url(self, session_id: str) -> str:
        """Return the session's WebSocket URL (every placeholder replaced)."""
        sid = validate_session_id(session_id)
        return self.session_connection_template.replace(naming.SESSION_ID_PLACEHOLDER, sid)

    def session_path(self, session_id: str) -> str:
        """Return the session's path on the proxy (every placeholder replaced)."""
        sid = validate_session_id(session_id)
        return self.session_path_template.replace(naming.SESSION_ID_PLACEHOLDER, sid)


def load_settings(**overrides: object) -> WebSocketSettings:
    """Load settings from the environment and ``.env``, with optional overrides.

    Raises:
        SettingsError: naming each bad variable and what it allows.
    """
    try:
        return WebSocketSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{ENV_PREFIX}{field.upper()} {msg}")
        raise SettingsError(
            "Invalid WebSocket settings",
            cause="; ".join(problems),
            hint="fix the variable(s) in the environment or .env",
        ) from None
