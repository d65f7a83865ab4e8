"""``WebSocketProxy``: the shared nginx that routes /ws/session/<id>/ to session pods."""

from __future__ import annotations

import pulumi

from components import proxy_manifests as m
from components.config import StackConfig
from components.k8s import declare
from session_runtime import naming

__all__ = ["WebSocketProxy"]


class WebSocketProxy(pulumi.ComponentResource):
    """ConfigMap (nginx.conf), Deployment, Service, exposure, PDB and NetworkPolicy.

    Args:
        name: the component's logical name.
        config: the validated stack config.
        opts: options; ``providers``/``provider`` and ``depends_on`` pass to the children.
    """

    config_map: pulumi.CustomResource
    deployment: pulumi.CustomResource
    service: pulumi.CustomResource
    network_policy: pulumi.CustomResource
    pdb: pulumi.CustomResource | None
    ingress: pulumi.CustomResource | None
    nginx_conf: str
    config_checksum: str

    def __init__(
        self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gamgui:websocket:Proxy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cm = m.proxy_configmap(config)
        self.nginx_conf = cm["data"][m.NGINX_CONF_KEY]
        self.config_checksum = m.config_checksum(self.nginx_conf)
        self.config_map = declare(f"{name}-nginx-conf", cm, child)
        self.deployment = declare(
            f"{name}-deployment",
            m.proxy_deployment(config, self.config_checksum),
            pulumi.ResourceOptions(parent=self, depends_on=[self.config_map]),
        )
        self.service = declare(f"{name}-service", m.proxy_service(config), child)
        self.network_policy = declare(
            f"{name}-network-policy", m.proxy_network_policy(config), child
        )
        pdb = m.proxy_pdb(config)
        self.pdb = declare(f"{name}-pdb", pdb, child) if pdb else None
        ingress = m.proxy_ingress(config)
        self.ingress = (
            declare(
                f"{name}-ingress",
                ingress,
                pulumi.ResourceOptions(parent=self, depends_on=[self.service]),
            )
            if ingress
            else None
        )
        self.register_outputs(
            {"service_name": naming.PROXY_SERVICE_NAME, "config_checksum": self.config_checksum}
        )
