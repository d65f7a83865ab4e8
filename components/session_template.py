"""``SessionTemplate``: everything per-session pods need in the namespace."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components import admission_manifests as admission
from components import session_manifests as m
from components.config import StackConfig
from components.k8s import declare
from session_runtime import naming

__all__ = ["SessionTemplate"]


class SessionTemplate(pulumi.ComponentResource):
    """PodTemplate, Service, quota, NetworkPolicy, ServiceAccounts, RBAC, token key, reaper.

    Args:
        name: the component's logical name.
        config: the validated stack config.
        opts: options; ``providers``/``provider`` and ``depends_on`` pass to the children.
    """

    pod_template: pulumi.CustomResource
    headless_service: pulumi.CustomResource
    quota: pulumi.CustomResource
    network_policy: pulumi.CustomResource
    session_service_account: pulumi.CustomResource
    runtime_service_account: pulumi.CustomResource
    runtime_role: pulumi.CustomResource
    runtime_role_binding: pulumi.CustomResource
    token_key_secret: pulumi.CustomResource
    pod_policy: pulumi.CustomResource
    pod_policy_binding: pulumi.CustomResource
    reaper: pulumi.CustomResource | None

    def __init__(
        self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gamgui:websocket:SessionTemplate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.session_service_account = declare(
            f"{name}-session-sa", m.session_service_account(config), child
        )
        self.pod_template = declare(
            f"{name}-pod-template",
            m.session_pod_template(config),
            pulumi.ResourceOptions(parent=self, depends_on=[self.session_service_account]),
        )
        self.headless_service = declare(
            f"{name}-headless-service", m.session_headless_service(config), child
        )
        self.quota = declare(f"{name}-quota", m.session_quota(config), child)
        self.network_policy = declare(
            f"{name}-network-policy", m.session_network_policy(config), child
        )
        self.runtime_service_account = declare(
            f"{name}-runtime-sa", m.runtime_service_account(config), child
        )
        self.runtime_role = declare(f"{name}-runtime-role", m.runtime_role(config), child)
        self.runtime_role_binding = declare(
            f"{name}-runtime-role-binding",
            m.runtime_role_binding(config),
            pulumi.ResourceOptions(
                parent=self, depends_on=[self.runtime_role, self.runtime_service_account]
            ),
        )
        key = random.RandomPassword(
            f"{name}-token-key", length=64, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        self.token_key_secret = declare(
            f"{name}-token-key",
            m.session_token_key_secret(config),
            child,
            string_data=key.result.apply(lambda value: {naming.TOKEN_KEY_SECRET_KEY: value}),
        )
        # The API server admits the runtime's pods only when shaped like the template.
        self.pod_policy = declare(f"{name}-pod-policy", admission.session_pod_policy(config), child)
        self.pod_policy_binding = declare(
            f"{name}-pod-policy-binding",
            admission.session_pod_policy_binding(config),
            pulumi.ResourceOptions(parent=self, depends_on=[self.pod_policy]),
        )
        reaper = m.reaper_cronjob(config)
        self.reaper = (
            declare(
                f"{name}-reaper",
                reaper,
                pulumi.ResourceOptions(parent=self, depends_on=[self.runtime_role_binding]),
            )
            if reaper
            else None
        )
        self.register_outputs({"template_name": naming.SESSION_TEMPLATE_NAME})
