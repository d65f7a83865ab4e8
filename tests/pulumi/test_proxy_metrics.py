"""The proxy's metrics: stub_status on its own port, the exporter sidecar, the policy, the conf."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from components.proxy_manifests import NAMESPACE_NAME_LABEL, NGINX_CONF_KEY, PROXY_CONFIGMAP_NAME
from policy.rules import container_security_violations, image_violations, resource_violations
from session_runtime import naming
from session_runtime.nginx import NginxConfig, render_nginx_conf
from tests.pulumi.harness import StackRun
from tests.support.agents import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


def _proxy_pod(run: StackRun) -> dict[str, Any]:
    return run.one("Deployment", naming.PROXY_SERVICE_NAME)["spec"]["template"]  # type: ignore[no-any-return]


def test_nginx_gets_a_status_port_and_the_exporter_reads_it(dev_run: StackRun) -> None:
    pod = _proxy_pod(dev_run)
    nginx, exporter = pod["spec"]["containers"]
    assert nginx["ports"][1] == {
        "name": naming.PROXY_STATUS_PORT_NAME,
        "containerPort": naming.PROXY_STATUS_PORT,
        "protocol": "TCP",
    }
    assert exporter["ports"] == [
        {
            "name": naming.PROXY_METRICS_PORT_NAME,
            "containerPort": naming.PROXY_METRICS_PORT,
            "protocol": "TCP",
        }
    ]
    assert (
        f"--nginx.scrape-uri=http://127.0.0.1:{naming.PROXY_STATUS_PORT}{naming.PROXY_STATUS_PATH}"
    ) in exporter["args"]
    conf = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    assert re.search(rf"listen \S+:{naming.PROXY_STATUS_PORT};", conf)
    assert f"location = {naming.PROXY_STATUS_PATH} {{\n            stub_status;" in conf


def test_the_pod_carries_the_standard_prometheus_annotations(dev_run: StackRun) -> None:
    annotations = _proxy_pod(dev_run)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(naming.PROXY_METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_only_the_monitoring_namespace_reaches_the_metrics_ports(variant: Any) -> None:
    run = variant(monitoringNamespace="observability")
    rules = run.one("NetworkPolicy", naming.PROXY_SERVICE_NAME)["spec"]["ingress"]
    clients, monitoring = rules
    assert "from" not in clients  # clients: the WebSocket port only
    assert [p["port"] for p in clients["ports"]] == [naming.PROXY_PORT]
    assert monitoring["from"] == [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "observability"}}}
    ]
    assert sorted(p["port"] for p in monitoring["ports"]) == sorted(
        [naming.PROXY_STATUS_PORT, naming.PROXY_METRICS_PORT]
    )


def test_metrics_off_means_no_status_server_sidecar_annotation_or_rule(variant: Any) -> None:
    run = variant(proxyMetrics=False)
    pod = _proxy_pod(run)
    (nginx,) = pod["spec"]["containers"]
    assert [p["name"] for p in nginx["ports"]] == [naming.PROXY_PORT_NAME]
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"]["annotations"])
    assert len(run.one("NetworkPolicy", naming.PROXY_SERVICE_NAME)["spec"]["ingress"]) == 1
    assert "stub_status" not in run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("proxyMetricsExporterImage", "nginx/nginx-prometheus-exporter:latest", "latest"),
        ("proxyMetricsExporterImage", "nginx/nginx-prometheus-exporter", "no tag"),
        ("monitoringNamespace", "Not_A_Namespace", "monitoringNamespace"),
    ],
)
def test_bad_metrics_config_is_refused_naming_the_key(
    variant: Any, key: str, value: str, problem: str
) -> None:
    with pytest.raises(Exception, match=key) as info:
        variant(**{key: value})
    assert problem in str(info.value)


def test_the_sidecar_is_valid_strict_and_passes_the_policy_rules(dev_run: StackRun) -> None:
    deployment = dev_run.one("Deployment", naming.PROXY_SERVICE_NAME)
    kubernetes_validate.validate(deployment, "1.30.0", strict=True)
    for rule in (image_violations, container_security_violations, resource_violations):
        assert rule(deployment) == []


@contextlib.contextmanager
def _nginx(conf: NginxConfig, tmp_path: Path) -> Iterator[None]:
    path = tmp_path / "nginx.conf"
    path.write_text(render_nginx_conf(conf))
    process = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(tmp_path),
            "-c",
            str(path),
            "-e",
            str(tmp_path / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _get(url: str) -> tuple[int, str]:
    deadline = time.monotonic() + 20  # nginx start-up, not a measurement
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@needs_nginx
def test_real_nginx_answers_stub_status_on_the_status_port_only(tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    (tmp_path / "temp").mkdir()
    conf = NginxConfig(
        listen_address="127.0.0.1",
        listen_port=port,
        status_port=status_port,
        resolver="127.0.0.1:53",
        session_domain="sessions.example.test",
        pid_path=str(tmp_path / "nginx.pid"),
        temp_dir=str(tmp_path / "temp"),
        error_log=str(tmp_path / "error.log"),
        access_log=str(tmp_path / "access.log"),
        worker_connections=64,
        worker_rlimit_nofile=256,
    )
    with _nginx(conf, tmp_path):
        code, body = _get(f"http://127.0.0.1:{status_port}{naming.PROXY_STATUS_PATH}")
        assert code == 200
        assert re.match(r"Active connections: \d+ \nserver accepts handled requests\n", body)
        assert _get(f"http://127.0.0.1:{status_port}/other")[0] == 404
        assert _get(f"http://127.0.0.1:{port}{naming.PROXY_STATUS_PATH}")[0] == 404
