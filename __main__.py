"""The Pulumi program: stack config -> validated model -> components -> outputs.

``pulumi preview`` shows what a change does; ``pulumi up`` applies it. A bad or
missing config value stops here with a message naming the key.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components import outputs
from components.config import (
    CONFIG_KEYS,
    SECRET_KEYS,
    StackConfig,
    StackConfigError,
    load_stack_config,
)
from components.default_session import DefaultSession
from components.k8s import declare
from components.proxy import WebSocketProxy
from components.session_manifests import namespace_manifest
from components.session_template import SessionTemplate

__all__: list[str] = []


def _load() -> StackConfig:
    config = pulumi.Config()
    values = {key: config.get(key) for key in CONFIG_KEYS}
    try:
        return load_stack_config({k: v for k, v in values.items() if v is not None})
    except StackConfigError as exc:
        raise pulumi.RunError(f"invalid stack config: {exc}") from None


def main() -> None:
    """Declare the whole stack."""
    cfg = _load()
    kube = cfg.kubernetes
    provider = k8s.Provider(
        "kubernetes",
        kubeconfig=kube.kubeconfig,
        context=kube.context,
        render_yaml_to_directory=kube.render_yaml_to_directory,
    )
    base = pulumi.ResourceOptions(provider=provider)
    depends: list[pulumi.Resource] = []
    if cfg.create_namespace:
        depends.append(declare("namespace", namespace_manifest(cfg), base))
    opts = pulumi.ResourceOptions(providers=[provider], depends_on=depends)

    WebSocketProxy("proxy", cfg, opts)
    SessionTemplate("sessions", cfg, opts)
    pulumi.export("namespace", cfg.namespace)
    pulumi.export("proxyUrl", outputs.proxy_url(cfg))
    env = outputs.websocket_env(cfg)
    pulumi.export("websocketEnv", env)
    pulumi.export("websocketDotenv", outputs.dotenv(env))
    if cfg.default_session.enabled:
        default = DefaultSession(
            "default-session", cfg, pulumi.Config().get_secret(SECRET_KEYS[0]), opts
        )
        pulumi.export("defaultSessionUrl", outputs.session_url(cfg))
        pulumi.export("defaultSessionToken", default.token)


main()
