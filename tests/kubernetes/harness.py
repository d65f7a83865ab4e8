"""A whole emulated cluster for manager-level tests: API emulator, kubelet with real agents.

The agents run the stand-in GAM from :mod:`tests.support.fake_gam` (fast and
offline); what is under test here is the path to it, not GAM.

Session pods that become Ready run a real agent process (the kubelet starts it
with the token from the pod's Secret). The manager reaches it through a
connector that maps the session's proxy URL to its agent, standing in for nginx
and cluster DNS, which the emulator has not got. Everything else — create,
limits, wait, tokens, close — goes through the Kubernetes backend over HTTP.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from session_runtime import naming
from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.client import SessionConnection
from session_runtime.errors import SessionConnectError
from session_runtime.manager import Connector, SessionManager
from session_runtime.settings import WebSocketSettings, load_settings
from tests.kubernetes.conftest import NAMESPACE, make_backend, seed_cluster
from tests.support.fake_gam import fake_gam_bin
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet

__all__ = ["KubeCluster", "agent_connector", "emulated_cluster"]

_SESSION_IN_PATH = re.compile(re.escape(naming.SESSION_PATH_PREFIX) + r"([^/]+)/")


def agent_connector(kubelet: Kubelet) -> Connector:
    """Return a connector that opens the session's agent directly (no proxy here)."""

    def connect(url: str, token: str, timeout: float) -> SessionConnection:
        match = _SESSION_IN_PATH.search(url)
        try:
            target = kubelet.agent_url(match.group(1) if match else "")
        except KeyError:
            raise SessionConnectError(cause=f"no agent runs for {url}") from None
        return SessionConnection.open(target, token, timeout=timeout)

    return connect


@dataclass
class KubeCluster:
    """The emulated cluster and how to build managers on it."""

    emulator: KubeEmulator
    kubelet: Kubelet
    backends: list[KubernetesBackend] = field(default_factory=list)

    def settings(self, **overrides: object) -> WebSocketSettings:
        """Settings for the Kubernetes backend in the emulated namespace."""
        values: dict[str, object] = {
            "backend": "kubernetes",
            "namespace": NAMESPACE,
            "start_timeout": 60,
            **overrides,
        }
        return load_settings(_env_file=None, **values)

    def manager(self, **overrides: object) -> SessionManager:
        """A manager on the Kubernetes backend; the quota follows ``max_sessions``."""
        settings = self.settings(**overrides)
        seed_cluster(self.emulator, quota=settings.max_sessions)
        backend = make_backend(self.emulator, settings)
        self.backends.append(backend)
        return SessionManager(settings, backend, connector=agent_connector(self.kubelet))


@contextlib.contextmanager
def emulated_cluster(agents_dir: Path) -> Iterator[KubeCluster]:
    """Run an emulator and a kubelet with real agents; both always stop."""
    emulator = KubeEmulator()
    emulator.start()
    kubelet = Kubelet(emulator, agents_dir=agents_dir, gam_bin=fake_gam_bin(agents_dir))
    cluster = KubeCluster(emulator, kubelet)
    try:
        seed_cluster(emulator)
        yield cluster
    finally:
        for backend in cluster.backends:
            backend.close()
        kubelet.stop()
        emulator.stop()
