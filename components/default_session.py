"""``DefaultSession``: the always-available session ``default``, as a Deployment."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components import session_manifests as m
from components.config import StackConfig
from components.k8s import declare
from session_runtime import naming

__all__ = ["DefaultSession"]


class DefaultSession(pulumi.ComponentResource):
    """The default session's token Secret and Deployment (stamped like any session).

    Args:
        name: the component's logical name.
        config: the validated stack config.
        token: the session token (a secret config value), or None to generate one
            (kept in the stack state, stable across updates).
        opts: options; ``providers``/``provider`` and ``depends_on`` pass to the children.
    """

    token: pulumi.Output[str]
    token_secret: pulumi.CustomResource
    deployment: pulumi.CustomResource

    def __init__(
        self,
        name: str,
        config: StackConfig,
        token: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gamgui:websocket:DefaultSession", name, None, opts)
        if token is None:
            generated = random.RandomPassword(
                f"{name}-token",
                length=48,
                special=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            token = generated.result
        self.token = pulumi.Output.secret(token)
        self.token_secret = declare(
            f"{name}-token",
            m.default_session_token_secret(config),
            pulumi.ResourceOptions(parent=self),
            string_data=self.token.apply(lambda value: {naming.TOKEN_SECRET_KEY: value}),
        )
        self.deployment = declare(
            f"{name}-deployment",
            m.default_session_deployment(config),
            pulumi.ResourceOptions(parent=self, depends_on=[self.token_secret]),
        )
        self.register_outputs({"token": self.token})
