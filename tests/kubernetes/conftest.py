"""Fixtures: a Kubernetes API emulator on a free loopback port, a kubelet, and the backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube.config.kubeconfig import KubeConfig
from pydantic import SecretStr

from session_runtime import naming, spec
from session_runtime.backends.kubernetes import KubernetesBackend, RetryPolicy
from session_runtime.backends.kubernetes.tokens import derive_token
from session_runtime.models import CreateRequest
from session_runtime.rbac import RUNTIME_ROLE_RULES, RUNTIME_SERVICE_ACCOUNT
from session_runtime.settings import WebSocketSettings
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet

NAMESPACE = "gamgui-test"
IMAGE = "ghcr.io/example/gamgui-session@sha256:" + "0" * 64
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=2.0)
#: The backend's clock in tests: sessions are stamped with this creation time.
CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def template_pod() -> dict[str, Any]:
    """The session template, exactly as the Pulumi component stores it."""
    return spec.session_template_pod(spec.SessionPodConfig(image=IMAGE), NAMESPACE)


#: The runtime's token key in tests (the stack generates a random one).
TOKEN_KEY = "k" * 48


def seed_cluster(emulator: KubeEmulator, *, quota: int | None = None) -> None:
    """Create what the Pulumi stack declares and the backend reads, RBAC included."""
    meta = {"name": RUNTIME_SERVICE_ACCOUNT, "namespace": NAMESPACE}
    emulator.put(
        "roles", {"kind": "Role", "metadata": dict(meta), "rules": list(RUNTIME_ROLE_RULES)}
    )
    emulator.put(
        "rolebindings",
        {
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "roleRef": {"kind": "Role", "name": RUNTIME_SERVICE_ACCOUNT},
            "subjects": [
                {"kind": "ServiceAccount", "name": RUNTIME_SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
    )
    emulator.put(
        "secrets",
        {
            "kind": "Secret",
            "metadata": {"name": naming.TOKEN_KEY_SECRET_NAME, "namespace": NAMESPACE},
            "stringData": {naming.TOKEN_KEY_SECRET_KEY: TOKEN_KEY},
        },
    )
    emulator.put(
        "podtemplates",
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": naming.SESSION_TEMPLATE_NAME, "namespace": NAMESPACE},
            "template": template_pod(),
        },
    )
    if quota is not None:
        emulator.put(
            "resourcequotas",
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "gamgui-sessions", "namespace": NAMESPACE},
                "spec": {"hard": {"pods": str(quota)}, "scopes": ["Terminating"]},
            },
        )


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    emu = KubeEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubelet(emulator: KubeEmulator) -> Iterator[Kubelet]:
    node = Kubelet(emulator)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def settings() -> WebSocketSettings:
    return WebSocketSettings(
        _env_file=None,  # type: ignore[call-arg]
        backend="kubernetes",
        namespace=NAMESPACE,
        max_sessions=3,
        start_timeout=5,
    )


class Activity:
    """An injectable agent probe: last_activity per ip:port (None = cannot tell)."""

    def __init__(self) -> None:
        self.by_address: dict[str, float | None] = {}
        self.asked: list[str] = []

    def __call__(self, address: str) -> float | None:
        self.asked.append(address)
        return self.by_address.get(address)


@pytest.fixture
def activity() -> Activity:
    return Activity()


def make_backend(
    emulator: KubeEmulator,
    settings: WebSocketSettings,
    *,
    activity: Activity | None = None,
    retry: RetryPolicy = FAST_RETRY,
    token: str | None = None,
) -> KubernetesBackend:
    """A backend talking to the emulator over HTTP (one per simulated server replica).

    It authenticates as the runtime's ServiceAccount (the RBAC the stack declares
    decides what it may do), unless ``token`` names another identity.
    """
    token = token or emulator.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)
    return KubernetesBackend(
        settings,
        config=KubeConfig.from_dict(emulator.kubeconfig(NAMESPACE, token)),
        retry=retry,
        activity_probe=activity or Activity(),
        trust_env=False,
        clock=lambda: CREATED_AT,
    )


@pytest.fixture
def backend(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings, activity: Activity
) -> Iterator[KubernetesBackend]:
    seed_cluster(emulator)
    impl = make_backend(emulator, settings, activity=activity)
    try:
        yield impl
    finally:
        impl.close()


def request(session_id: str, token: str = "t0ken-abc", **fields: Any) -> CreateRequest:  # noqa: S107
    """A create request as the manager builds it."""
    values: dict[str, Any] = {
        "credentials_secret": naming.DEFAULT_CREDENTIALS_SECRET,
        "max_sessions": 3,
        **fields,
    }
    return CreateRequest(session_id=session_id, token=SecretStr(token), **values)


def expected_token(emulator: KubeEmulator, session_id: str) -> str:
    """The token a session pod in the emulator must have (derived from its uid)."""
    pod = emulator.get("pods", NAMESPACE, naming.session_pod_name(session_id))
    assert pod is not None
    return derive_token(TOKEN_KEY.encode(), NAMESPACE, session_id, pod["metadata"]["uid"])


def session_secrets(emulator: KubeEmulator) -> list[dict[str, Any]]:
    """The session token Secrets in the emulator (the stack's token key excluded)."""
    selector = naming.session_selector()
    return [
        s
        for s in emulator.list("secrets", NAMESPACE)
        if selector.items() <= (s["metadata"].get("labels") or {}).items()
    ]
