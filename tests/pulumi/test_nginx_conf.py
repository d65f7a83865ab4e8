"""The nginx.conf stored in the proxy's ConfigMap passes ``nginx -t``.

The config is tested exactly as stored, with one change: its writable directory
(``/tmp/nginx`` in the pod, an emptyDir) is moved under the test's own temporary
directory, because nginx creates its temp paths there even when only testing and
``/tmp/nginx`` on this machine may belong to someone else.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import load_stack_config
from components.proxy_manifests import NGINX_CONF_KEY, PROXY_CONFIGMAP_NAME
from session_runtime.nginx import render_nginx_conf
from tests.pulumi.harness import StackRun, dev_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


def _nginx_test(conf_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pod_dir = "/tmp/nginx"
    work = tmp_path / "nginx"
    work.mkdir()
    assert pod_dir in conf_text
    conf = tmp_path / "nginx.conf"
    conf.write_text(conf_text.replace(pod_dir, str(work)))
    return subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_configmap_nginx_conf_passes_nginx_t(dev_run: StackRun, tmp_path: Path) -> None:
    conf_text = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    result = _nginx_test(conf_text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_configmap_holds_exactly_what_the_shared_renderer_produces(dev_run: StackRun) -> None:
    cfg = load_stack_config({k: str(v) for k, v in dev_config().items()})
    stored = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    assert stored == render_nginx_conf(cfg.nginx_config())


def test_nginx_t_rejects_a_broken_config(dev_run: StackRun, tmp_path: Path) -> None:
    conf_text = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    result = _nginx_test(
        conf_text.replace("proxy_http_version 1.1;", "proxy_http_version;"), tmp_path
    )
    assert result.returncode != 0
    assert "proxy_http_version" in result.stderr
