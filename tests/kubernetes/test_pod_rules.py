"""What a pod's status means, the agent activity probe and the cluster configuration."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Pod

from session_runtime import naming
from session_runtime.backends.kubernetes import load_kube_config, pods
from session_runtime.backends.kubernetes.reap import http_activity_probe
from session_runtime.errors import BackendUnavailableError
from session_runtime.models import SessionStatus
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import NAMESPACE
from tests.support.kube_emulator import KubeEmulator


def _pod(status: dict[str, Any], **meta: Any) -> Pod:
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": naming.session_labels("s1"), **meta},
            "spec": {"containers": [{"name": "agent", "image": "i"}]},
            "status": status,
        }
    )


def _waiting(reason: str, message: str = "") -> dict[str, Any]:
    state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return {
        "phase": "Pending",
        "containerStatuses": [
            {"name": "agent", "image": "i", "imageID": "", "ready": False, "restartCount": 0,
             "state": state}
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Pending"}, SessionStatus.PENDING),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
         SessionStatus.STARTING),
        ({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
         SessionStatus.STARTING),
        ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
         SessionStatus.READY),
        ({"phase": "Succeeded"}, SessionStatus.FINISHED),
        ({"phase": "Failed", "reason": "DeadlineExceeded"}, SessionStatus.FAILED),
        (_waiting("ImagePullBackOff"), SessionStatus.FAILED),
        (_waiting("ContainerCreating"), SessionStatus.PENDING),
    ],
)  # fmt: skip
def test_phase_and_conditions_map_to_a_session_status(
    status: dict[str, Any], expected: SessionStatus
) -> None:
    assert pods.pod_status(_pod(status)) is expected


def test_a_pod_being_deleted_is_terminating_and_not_live() -> None:
    pod = _pod({"phase": "Running"}, deletionTimestamp="2026-01-01T00:00:00Z")
    assert pods.pod_status(pod) is SessionStatus.TERMINATING
    assert pods.is_live(pod) is False


@pytest.mark.parametrize("reason", sorted(pods.FAIL_FAST_REASONS))
def test_every_fail_fast_waiting_reason_is_a_failure_with_its_message(reason: str) -> None:
    assert pods.failure_reason(_pod(_waiting(reason, "why"))) == f"{reason}: why"


def test_container_creating_is_not_a_failure() -> None:
    assert pods.failure_reason(_pod(_waiting("ContainerCreating"))) is None


def test_unschedulable_is_a_failure_but_plain_pending_scheduling_is_not() -> None:
    unschedulable = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes"}
        ],
    }  # fmt: skip
    assert pods.failure_reason(_pod(unschedulable)) == "Unschedulable: 0/1 nodes"
    waiting = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
    assert pods.failure_reason(_pod(waiting)) is None


def test_the_token_comes_from_the_secret_and_a_missing_secret_is_a_reason() -> None:
    pod = _pod({"phase": "Running", "podIP": "10.0.0.1"})
    session = pods.to_backend_session(pod, None)
    assert session.token.get_secret_value() == ""
    assert session.reason == "token Secret missing"
    assert session.agent_address == f"10.0.0.1:{naming.AGENT_PORT}"


# --- the agent activity probe -----------------------------------------------------
class _Health(BaseHTTPRequestHandler):
    body: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200 if self.path == naming.HEALTH_PATH else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Health", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_probe_reads_last_activity_from_the_agents_health(
    health_server: tuple[str, type[_Health]],
) -> None:
    address, handler = health_server
    handler.body = json.dumps({"status": "ok", "last_activity": 1700000000.5}).encode()
    assert http_activity_probe(address) == 1700000000.5


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"last_activity": "soon"}', b'{"status": "ok"}']
)
def test_the_probe_says_unknown_for_answers_it_cannot_read(
    health_server: tuple[str, type[_Health]], body: bytes
) -> None:
    address, handler = health_server
    handler.body = body
    assert http_activity_probe(address) is None


@pytest.mark.parametrize(
    "address", ["localhost:80", "10.0.0.1", "10.0.0.1:0", "x:y", "1.2.3.4:99999"]
)
def test_the_probe_refuses_anything_but_an_ip_and_a_port(address: str) -> None:
    assert http_activity_probe(address, timeout=0.2) is None


def test_the_probe_says_unknown_when_nothing_listens() -> None:
    assert http_activity_probe("127.0.0.1:9", timeout=0.5) is None


# --- cluster configuration ----------------------------------------------------------
def test_an_explicit_context_is_taken_from_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = KubeEmulator()
    emulator.start()
    try:
        conf = emulator.kubeconfig(NAMESPACE)
        other = {"name": "other", "context": {"cluster": "emulator", "user": "tester"}}
        conf["contexts"].append(other)
        path = tmp_path / "config"
        path.write_text(yaml.safe_dump(conf))
        monkeypatch.setenv("KUBECONFIG", str(path))
        config = load_kube_config(WebSocketSettings(_env_file=None, kube_context="other"))  # type: ignore[call-arg]
        assert config.context_name == "other"
        assert config.cluster.server == emulator.url
    finally:
        emulator.stop()


def test_an_unknown_context_or_missing_kubeconfig_is_backend_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(BackendUnavailableError, match="No Kubernetes configuration found") as err:
        load_kube_config(WebSocketSettings(_env_file=None))  # type: ignore[call-arg]
    assert "KUBECONFIG" in (err.value.hint or "")
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [],
                                    "contexts": [], "users": []}))  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(BackendUnavailableError, match="No Kubernetes configuration found"):
        load_kube_config(WebSocketSettings(_env_file=None, kube_context="nope"))  # type: ignore[call-arg]
