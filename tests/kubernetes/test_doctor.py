"""doctor: every check in order, each pass/fail with a hint, the exit code tells the truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Secret

from session_runtime import naming
from session_runtime.backends.kubernetes import KubernetesBackend, RetryPolicy
from session_runtime.backends.kubernetes.api import KubeApi
from session_runtime.backends.local import LocalBackend
from session_runtime.doctor import DoctorReport, run_doctor
from session_runtime.errors import BackendError
from session_runtime.manager import SessionManager
from session_runtime.rbac import RUNTIME_SERVICE_ACCOUNT, access_questions
from tests.kubernetes.conftest import NAMESPACE, make_backend, request, seed_cluster
from tests.kubernetes.harness import KubeCluster, emulated_cluster
from tests.support.kube_emulator import ADMIN_TOKEN

ORDER = [
    "settings",
    "api",
    "rbac",
    "pod-template",
    "session-service",
    "resource-quota",
    "proxy",
    "default-session",
]


def _install_stack(cluster: KubeCluster, *, proxy_ready: int = 1) -> None:
    """What `pulumi up` leaves in the namespace (besides the template and quota)."""
    emu = cluster.emulator
    emu.put(
        "services",
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": naming.SESSION_SERVICE_NAME, "namespace": NAMESPACE},
         "spec": {"clusterIP": "None", "ports": [{"port": naming.AGENT_PORT}]}},
    )  # fmt: skip
    emu.put(
        "deployments",
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": naming.PROXY_SERVICE_NAME, "namespace": NAMESPACE},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "proxy"}},
                  "template": {"metadata": {"labels": {"app": "proxy"}},
                               "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
         "status": {"readyReplicas": proxy_ready}},
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubeCluster]:
    with emulated_cluster(tmp_path) as made:
        yield made


def _doctor(
    cluster: KubeCluster, manager: SessionManager, *, full: bool = False, token: str = ADMIN_TOKEN
) -> DoctorReport:
    """Run doctor as the identity of ``token`` (default: a cluster admin's kubeconfig)."""
    backend = make_backend(
        cluster.emulator,
        manager.settings,
        token=token,
        retry=RetryPolicy(attempts=2, base_delay=0.01, request_timeout=2.0),
    )
    as_identity = SessionManager(manager.settings, backend, connector=manager.connector)
    try:
        return run_doctor(manager.settings, full=full, manager=as_identity)
    finally:
        backend.close()


def _line(report: DoctorReport, name: str) -> tuple[bool | None, str, str | None]:
    found = next(c for c in report.checks if c.name == name)
    return found.ok, found.detail, found.hint


def test_a_healthy_stack_passes_every_check_in_order_and_the_round_trip(
    cluster: KubeCluster,
) -> None:
    manager = cluster.manager(max_sessions=5)
    _install_stack(cluster)
    manager.backend.create(request("default"))
    manager.backend.wait_ready("default", timeout=30)
    report = _doctor(cluster, manager, full=True)
    assert [c.name for c in report.checks] == [*ORDER, "test-session"]
    assert report.ok, report.render()
    assert report.exit_code == 0
    assert f"all {len(access_questions())} permissions allowed" in _line(report, "rbac")[1]
    assert "pods=5 (Terminating scope)" in _line(report, "resource-quota")[1]
    assert "1/2 replicas ready" in _line(report, "proxy")[1]
    assert "'version' exited 0" in _line(report, "default-session")[1]
    assert _line(report, "test-session")[1].endswith("(closed)")
    assert [s.session_id for s in manager.list_sessions()] == ["default"]
    assert report.render().splitlines()[-1] == "doctor: all checks passed"


def test_missing_verbs_pieces_and_an_unready_proxy_each_fail_with_a_hint(
    cluster: KubeCluster,
) -> None:
    manager = cluster.manager()
    _install_stack(cluster, proxy_ready=0)
    cluster.emulator.remove("resourcequotas", NAMESPACE, "gamgui-sessions")
    cluster.emulator.remove("podtemplates", NAMESPACE, naming.SESSION_TEMPLATE_NAME)
    cluster.emulator.denied = {("watch", "pods"), ("create", "secrets")}
    report = _doctor(cluster, manager)
    assert [c.name for c in report.checks] == ORDER
    assert report.exit_code == 1
    expected = {
        "settings": True,
        "api": True,
        "rbac": False,
        "pod-template": False,
        "session-service": True,
        "resource-quota": False,
        "proxy": False,
        "default-session": False,
    }
    assert {c.name: c.ok for c in report.checks} == expected
    _, detail, hint = _line(report, "rbac")
    assert detail == "not allowed: watch pods, create secrets"
    assert hint and "Role" in hint
    assert "PodTemplate gamgui-session not found" in _line(report, "pod-template")[1]
    assert "0/2 replicas ready" in _line(report, "proxy")[1]
    assert "default: step exists failed" in _line(report, "default-session")[1]
    assert all(c.hint for c in report.checks if c.ok is False)
    rendered = report.render()
    assert "FAIL  rbac" in rendered and "      hint: " in rendered
    assert rendered.splitlines()[-1].startswith("doctor: failed: rbac, pod-template")


def test_an_unreachable_api_fails_once_and_skips_what_depends_on_it(
    cluster: KubeCluster,
) -> None:
    manager = cluster.manager()
    dead = KubeConfig.from_dict(
        {**cluster.emulator.kubeconfig(NAMESPACE),
         "clusters": [{"name": "emulator", "cluster": {"server": "http://127.0.0.1:9"}}]}
    )  # fmt: skip
    backend = KubernetesBackend(
        manager.settings,
        config=dead,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
        trust_env=False,
    )
    try:
        unreachable = SessionManager(manager.settings, backend, connector=manager.connector)
        report = run_doctor(manager.settings, manager=unreachable)
    finally:
        backend.close()
    ok, detail, hint = _line(report, "api")
    assert ok is False and "Kubernetes API unavailable" in detail and hint
    skipped = [c.name for c in report.checks if c.ok is None]
    assert skipped == ["rbac", "pod-template", "session-service", "resource-quota", "proxy"]
    assert report.exit_code == 1


def test_invalid_settings_fail_first_and_stop_the_checklist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_SESSION_PATH_TEMPLATE", "/ws/session/no-placeholder/")
    report = run_doctor()
    ok, detail, hint = _line(report, "settings")
    assert ok is False
    assert "WEBSOCKET_SESSION_PATH_TEMPLATE must contain {{SESSION_ID}}" in detail
    assert hint
    assert all(c.ok is None for c in report.checks[1:])
    assert report.exit_code == 1


def test_the_local_backend_brings_its_own_check_and_no_cluster_ones(
    cluster: KubeCluster, tmp_path: Path
) -> None:
    manager = cluster.manager()
    local = manager.settings.model_copy(update={"backend": "local", "local_state_dir": tmp_path})
    backend = LocalBackend(tmp_path)
    report = run_doctor(local, manager=SessionManager(local, backend, connector=manager.connector))
    names = [c.name for c in report.checks]
    assert names == ["settings", "local-stack", "default-session"]
    ok, detail, hint = _line(report, "local-stack")
    assert ok is False and "not running" in detail and hint and "local up" in hint
    assert _line(report, "settings")[0] is True


def test_the_cli_prints_the_checklist_and_exits_non_zero_on_failure(
    cluster: KubeCluster, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import yaml

    _install_stack(cluster)
    seed_cluster(cluster.emulator, quota=50)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(cluster.emulator.kubeconfig(NAMESPACE)))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WEBSOCKET_", "KUBERNETES_")) and "proxy" not in k.lower()
    }
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "WEBSOCKET_BACKEND": "kubernetes",
            "WEBSOCKET_NAMESPACE": NAMESPACE,
            "WEBSOCKET_START_TIMEOUT": "2",
            "WEBSOCKET_CONNECT_TIMEOUT": "1",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "session_runtime", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert [line.split()[:2] for line in lines if line[:4] in ("PASS", "FAIL")] == [
        ["PASS", "settings"],
        ["PASS", "api"],
        ["PASS", "rbac"],
        ["PASS", "pod-template"],
        ["PASS", "session-service"],
        ["PASS", "resource-quota"],
        ["PASS", "proxy"],
        ["FAIL", "default-session"],  # no default session in this namespace
    ]
    assert lines[-1] == "doctor: failed: default-session"


def _runtime_token(cluster: KubeCluster) -> str:
    return cluster.emulator.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)


def test_doctor_as_the_runtime_identity_passes_and_says_what_it_cannot_check(
    cluster: KubeCluster,
) -> None:
    manager = cluster.manager(max_sessions=5)
    _install_stack(cluster)
    manager.backend.create(request("default"))
    manager.backend.wait_ready("default", timeout=30)
    report = _doctor(cluster, manager, full=True, token=_runtime_token(cluster))
    assert report.ok, report.render()
    assert f"all {len(access_questions())} permissions allowed" in _line(report, "rbac")[1]
    assert _line(report, "pod-template")[0] is True
    for name in ("session-service", "resource-quota", "proxy"):
        ok, detail, _ = _line(report, name)
        assert ok is None and detail.startswith("cannot check as this identity"), detail
    assert _line(report, "test-session")[0] is True


def test_doctor_as_an_identity_missing_one_rule_names_that_rule(cluster: KubeCluster) -> None:
    manager = cluster.manager()
    _install_stack(cluster)
    role = cluster.emulator.get("roles", NAMESPACE, RUNTIME_SERVICE_ACCOUNT)
    assert role is not None
    role["rules"] = [r for r in role["rules"] if r.get("resources") != ["podtemplates"]]
    cluster.emulator.put("roles", role)
    report = _doctor(cluster, manager, token=_runtime_token(cluster))
    ok, detail, hint = _line(report, "rbac")
    assert ok is False
    assert detail == f"not allowed: get podtemplates/{naming.SESSION_TEMPLATE_NAME}"
    assert hint is not None and f'resourceNames: ["{naming.SESSION_TEMPLATE_NAME}"]' in hint


def test_the_runtime_identity_cannot_list_or_read_the_google_credentials(
    cluster: KubeCluster,
) -> None:
    cluster.emulator.put(
        "secrets",
        {"kind": "Secret",
         "metadata": {"name": naming.DEFAULT_CREDENTIALS_SECRET, "namespace": NAMESPACE},
         "stringData": {"oauth2service.json": "{}"}},
    )  # fmt: skip
    api = KubeApi(
        KubeConfig.from_dict(cluster.emulator.kubeconfig(NAMESPACE, _runtime_token(cluster))),
        NAMESPACE,
        retry=RetryPolicy(attempts=1, request_timeout=2.0),
        trust_env=False,
    )
    try:
        with pytest.raises(BackendError) as listed:
            api.list(Secret)
        with pytest.raises(BackendError) as read:
            api.get(Secret, naming.DEFAULT_CREDENTIALS_SECRET)
        # What it must read, it may: the token key, by name.
        assert api.get(Secret, naming.TOKEN_KEY_SECRET_NAME) is not None
    finally:
        api.close()
    assert (listed.value.cause or "").startswith("403 Forbidden")
    assert (read.value.cause or "").startswith("403 Forbidden")
