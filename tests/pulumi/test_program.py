"""The real __main__.py under mocks: what it declares, how the parts agree, what config changes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.admission_manifests import SESSION_POD_POLICY_NAME
from components.proxy_manifests import (
    CHECKSUM_ANNOTATION,
    NGINX_CONF_KEY,
    PROXY_CONFIGMAP_NAME,
    PROXY_SERVICE_PORT,
    proxy_selector,
)
from components.session_manifests import QUOTA_NAME, REAPER_NAME, RUNTIME_SERVICE_ACCOUNT
from session_runtime import naming
from session_runtime.settings import load_settings
from session_runtime.spec import TOKEN_VOLUME
from tests.pulumi.harness import GENERATED_TOKEN, StackRun, dev_config, run_stack

DEFAULT_DEPLOYMENT = naming.session_pod_name("default")


def _pod_template(m: dict[str, Any]) -> dict[str, Any]:
    if m["kind"] == "PodTemplate":
        return m["template"]  # type: ignore[no-any-return]
    if m["kind"] == "CronJob":
        return m["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    return m["spec"]["template"]  # type: ignore[no-any-return]


def _container(m: dict[str, Any]) -> dict[str, Any]:
    """The pod's main container (sidecars, such as the proxy's exporter, come after it)."""
    return _pod_template(m)["spec"]["containers"][0]  # type: ignore[no-any-return]


def _env(m: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(m).get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_dev_stack_declares_every_part(dev_run: StackRun) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in dev_run.manifests()}
    assert kinds == {
        ("Namespace", "gamgui"),
        ("ConfigMap", PROXY_CONFIGMAP_NAME),
        ("Deployment", naming.PROXY_SERVICE_NAME),
        ("Service", naming.PROXY_SERVICE_NAME),
        ("NetworkPolicy", naming.PROXY_SERVICE_NAME),
        ("PodTemplate", naming.SESSION_TEMPLATE_NAME),
        ("Service", naming.SESSION_SERVICE_NAME),
        ("ResourceQuota", QUOTA_NAME),
        ("NetworkPolicy", naming.SESSION_SERVICE_NAME),
        ("ServiceAccount", "gamgui-session"),
        ("ServiceAccount", RUNTIME_SERVICE_ACCOUNT),
        ("Role", RUNTIME_SERVICE_ACCOUNT),
        ("RoleBinding", RUNTIME_SERVICE_ACCOUNT),
        ("CronJob", REAPER_NAME),
        ("Secret", naming.session_token_secret_name("default")),
        ("Secret", naming.TOKEN_KEY_SECRET_NAME),
        ("ValidatingAdmissionPolicy", f"{SESSION_POD_POLICY_NAME}-gamgui"),
        ("ValidatingAdmissionPolicyBinding", f"{SESSION_POD_POLICY_NAME}-gamgui"),
        ("Deployment", DEFAULT_DEPLOYMENT),
    }
    types = {r.typ for r in dev_run.resources}
    assert {
        "gamgui:websocket:Proxy",
        "gamgui:websocket:SessionTemplate",
        "gamgui:websocket:DefaultSession",
    } <= types


def test_every_object_lives_in_the_stack_namespace(dev_run: StackRun) -> None:
    cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for m in dev_run.manifests():
        if m["kind"] not in cluster_scoped:
            assert m["metadata"]["namespace"] == "gamgui", m["metadata"]["name"]
        else:  # cluster-scoped: named after the namespace, bound to it
            assert m["kind"] == "Namespace" or m["metadata"]["name"].endswith("-gamgui")


def test_selectors_match_the_pod_labels(dev_run: StackRun) -> None:
    proxy = dev_run.one("Deployment", naming.PROXY_SERVICE_NAME)
    proxy_labels = _pod_template(proxy)["metadata"]["labels"]
    assert proxy["spec"]["selector"]["matchLabels"] == proxy_selector()
    assert _selects(proxy_selector(), proxy_labels)
    svc = dev_run.one("Service", naming.PROXY_SERVICE_NAME)
    assert _selects(svc["spec"]["selector"], proxy_labels)

    session_labels = _pod_template(dev_run.one("PodTemplate", naming.SESSION_TEMPLATE_NAME))[
        "metadata"
    ]["labels"]
    headless = dev_run.one("Service", naming.SESSION_SERVICE_NAME)
    assert headless["spec"]["clusterIP"] == "None"
    assert _selects(headless["spec"]["selector"], session_labels)
    session_np = dev_run.one("NetworkPolicy", naming.SESSION_SERVICE_NAME)
    assert _selects(session_np["spec"]["podSelector"]["matchLabels"], session_labels)
    (rule,) = session_np["spec"]["ingress"]
    assert _selects(rule["from"][0]["podSelector"]["matchLabels"], proxy_labels)
    reaper = dev_run.one("CronJob", REAPER_NAME)
    reaper_labels = reaper["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert _selects(rule["from"][1]["podSelector"]["matchLabels"], reaper_labels)
    assert not _selects(rule["from"][1]["podSelector"]["matchLabels"], proxy_labels)
    assert len(rule["from"]) == 2
    proxy_np = dev_run.one("NetworkPolicy", naming.PROXY_SERVICE_NAME)
    assert _selects(proxy_np["spec"]["podSelector"]["matchLabels"], proxy_labels)

    default = dev_run.one("Deployment", DEFAULT_DEPLOYMENT)
    default_labels = _pod_template(default)["metadata"]["labels"]
    assert _selects(default["spec"]["selector"]["matchLabels"], default_labels)
    assert _selects(headless["spec"]["selector"], default_labels)
    assert _selects(session_np["spec"]["podSelector"]["matchLabels"], default_labels)


def test_ports_agree_across_nginx_services_env_probes_and_policies(dev_run: StackRun) -> None:
    conf = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    listen = int(re.search(r"listen \S+:(\d+) default_server;", conf).group(1))  # type: ignore[union-attr]
    upstream_port = int(
        re.search(r"proxy_pass http://\$sid\.\S+:(\d+)\$request_uri;", conf).group(1)
    )  # type: ignore[union-attr]

    proxy = _container(dev_run.one("Deployment", naming.PROXY_SERVICE_NAME))
    proxy_port = proxy["ports"][0]  # then the stub_status port (tests/pulumi/test_proxy_metrics)
    assert proxy_port["containerPort"] == listen == naming.PROXY_PORT
    for probe in ("readinessProbe", "livenessProbe"):
        assert proxy[probe]["httpGet"] == {
            "path": naming.HEALTH_PATH,
            "port": proxy_port["name"],
        }
    (svc_port,) = dev_run.one("Service", naming.PROXY_SERVICE_NAME)["spec"]["ports"]
    assert svc_port["targetPort"] == proxy_port["name"] and svc_port["port"] == PROXY_SERVICE_PORT
    proxy_np = dev_run.one("NetworkPolicy", naming.PROXY_SERVICE_NAME)["spec"]
    assert proxy_np["ingress"][0]["ports"][0]["port"] == listen

    for session in (
        dev_run.one("PodTemplate", naming.SESSION_TEMPLATE_NAME),
        dev_run.one("Deployment", DEFAULT_DEPLOYMENT),
    ):
        agent = _container(session)
        (agent_port,) = agent["ports"]
        assert agent_port["containerPort"] == upstream_port == naming.AGENT_PORT
        assert _env(session)[naming.ENV_AGENT_PORT] == str(upstream_port)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert agent[probe]["httpGet"]["port"] == agent_port["name"]
            assert agent[probe]["httpGet"]["path"] == naming.HEALTH_PATH
    (headless_port,) = dev_run.one("Service", naming.SESSION_SERVICE_NAME)["spec"]["ports"]
    assert headless_port["port"] == upstream_port
    assert headless_port["targetPort"] == naming.AGENT_PORT_NAME
    session_np = dev_run.one("NetworkPolicy", naming.SESSION_SERVICE_NAME)["spec"]
    assert session_np["ingress"][0]["ports"] == [{"protocol": "TCP", "port": upstream_port}]
    egress_to_sessions = proxy_np["egress"][1]
    assert egress_to_sessions["ports"] == [{"protocol": "TCP", "port": upstream_port}]


def test_nginx_routes_to_the_headless_service_domain(dev_run: StackRun) -> None:
    conf = dev_run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    assert f"$sid.{naming.session_domain('gamgui')}:" in conf
    assert "resolver 10.96.0.10 " in conf


def test_quota_counts_only_session_pods_and_equals_max_sessions(dev_run: StackRun) -> None:
    quota = dev_run.one("ResourceQuota", QUOTA_NAME)["spec"]
    assert quota == {"hard": {"pods": "10"}, "scopes": ["Terminating"]}
    template = _pod_template(dev_run.one("PodTemplate", naming.SESSION_TEMPLATE_NAME))
    assert template["spec"]["activeDeadlineSeconds"] == 28800
    for name in (naming.PROXY_SERVICE_NAME, DEFAULT_DEPLOYMENT):
        spec = _pod_template(dev_run.one("Deployment", name))["spec"]
        assert "activeDeadlineSeconds" not in spec
    assert "activeDeadlineSeconds" not in _pod_template(dev_run.one("CronJob", REAPER_NAME))["spec"]


def test_default_session_is_stamped_like_a_runtime_session(dev_run: StackRun) -> None:
    default = dev_run.one("Deployment", DEFAULT_DEPLOYMENT)
    template = _pod_template(default)
    spec = template["spec"]
    assert spec["hostname"] == "default"
    assert spec["subdomain"] == naming.SESSION_SERVICE_NAME
    assert spec["restartPolicy"] == "Always"
    assert default["spec"]["replicas"] == 1
    env = _env(default)
    assert env[naming.ENV_SESSION_ID] == "default"
    assert env[naming.ENV_IDLE_TIMEOUT] == "0"
    assert env[naming.ENV_SESSION_COMMAND] == "info domain"
    token_volume = next(v for v in spec["volumes"] if v["name"] == TOKEN_VOLUME)
    assert token_volume["secret"]["secretName"] == naming.session_token_secret_name("default")
    assert naming.ANNOTATION_CREATED_AT not in template["metadata"]["annotations"]
    secret = dev_run.one("Secret", naming.session_token_secret_name("default"))
    assert secret["stringData"] == {naming.TOKEN_SECRET_KEY: GENERATED_TOKEN}


def test_the_token_key_secret_holds_a_random_key(dev_run: StackRun) -> None:
    secret = dev_run.one("Secret", naming.TOKEN_KEY_SECRET_NAME)
    # The mocks answer every RandomPassword with the same value.
    assert secret["stringData"] == {naming.TOKEN_KEY_SECRET_KEY: GENERATED_TOKEN}
    assert "data" not in secret


def test_runtime_role_is_namespaced_and_minimal(dev_run: StackRun) -> None:
    role = dev_run.one("Role", RUNTIME_SERVICE_ACCOUNT)
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"pods", "secrets", "events", "podtemplates"}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "escalate" not in rule["verbs"]
    # Least privilege for Secrets: no list, and get only by name (never gam-credentials).
    for rule in role["rules"]:
        if "secrets" in rule["resources"]:
            assert "list" not in rule["verbs"] and "watch" not in rule["verbs"]
            if "get" in rule["verbs"]:
                assert naming.DEFAULT_CREDENTIALS_SECRET not in rule["resourceNames"]
                assert rule["resourceNames"]
    binding = dev_run.one("RoleBinding", RUNTIME_SERVICE_ACCOUNT)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == RUNTIME_SERVICE_ACCOUNT
    reaper = dev_run.one("CronJob", REAPER_NAME)
    assert _pod_template(reaper)["spec"]["serviceAccountName"] == RUNTIME_SERVICE_ACCOUNT
    assert _container(reaper)["command"] == ["gamgui-session", "reap"]
    assert _env(reaper)["WEBSOCKET_NAMESPACE"] == "gamgui"


def test_outputs_give_the_server_working_settings(
    dev_run: StackRun, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    out = dev_run.outputs
    assert out["namespace"] == "gamgui"
    assert out["proxyUrl"] == "http://websocket-proxy.gamgui.svc.cluster.local"
    assert out["defaultSessionUrl"] == (
        "ws://websocket-proxy.gamgui.svc.cluster.local/ws/session/default/"
    )
    assert out["defaultSessionToken"] == GENERATED_TOKEN
    env = out["websocketEnv"]
    assert out["websocketDotenv"] == "".join(f"{k}={v}\n" for k, v in env.items())
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.backend == "kubernetes"
    assert settings.max_sessions == 10
    assert settings.session_url("default") == out["defaultSessionUrl"]
    assert settings.namespace == "gamgui"


def test_token_output_is_secret_and_given_token_is_used() -> None:
    run = run_stack(dev_config(), secrets={"defaultSessionToken": "from-config-token"})
    secret = run.one("Secret", naming.session_token_secret_name("default"))
    assert secret["stringData"] == {naming.TOKEN_SECRET_KEY: "from-config-token"}
    generated = [r.name for r in run.resources if r.typ.startswith("random:")]
    assert all(name.endswith("-token-key") for name in generated)  # only the token key
    assert run.outputs["defaultSessionToken"] == "from-config-token"


def test_replicas_change_the_deployment_and_add_a_pdb(variant: Any, dev_run: StackRun) -> None:
    assert not dev_run.has("PodDisruptionBudget", naming.PROXY_SERVICE_NAME)
    run = variant(proxyReplicas=3)
    deployment = run.one("Deployment", naming.PROXY_SERVICE_NAME)
    assert deployment["spec"]["replicas"] == 3
    assert _pod_template(deployment)["spec"]["topologySpreadConstraints"]
    pdb = run.one("PodDisruptionBudget", naming.PROXY_SERVICE_NAME)
    assert pdb["spec"]["selector"]["matchLabels"] == proxy_selector()


def test_exposure_ingress_adds_an_ingress_to_the_proxy_service(variant: Any) -> None:
    run = variant(exposure="ingress", ingressHost="gam.example.org", ingressTlsSecret="gam-tls")
    ingress = run.one("Ingress", naming.PROXY_SERVICE_NAME)
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "gam.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": naming.PROXY_SERVICE_NAME, "port": {"name": naming.PROXY_PORT_NAME}}
    assert ingress["spec"]["tls"] == [{"hosts": ["gam.example.org"], "secretName": "gam-tls"}]
    assert run.one("Service", naming.PROXY_SERVICE_NAME)["spec"]["type"] == "ClusterIP"


def test_exposure_loadbalancer_changes_the_service_type(variant: Any, dev_run: StackRun) -> None:
    assert dev_run.one("Service", naming.PROXY_SERVICE_NAME)["spec"]["type"] == "ClusterIP"
    run = variant(exposure="loadbalancer")
    assert run.one("Service", naming.PROXY_SERVICE_NAME)["spec"]["type"] == "LoadBalancer"
    assert not run.manifests("Ingress")


def test_default_session_off_removes_it_and_its_outputs(variant: Any) -> None:
    run = variant(defaultSessionEnabled=False)
    assert not run.has("Deployment", DEFAULT_DEPLOYMENT)
    # Only the runtime's token key is left: no default session token Secret.
    assert [m["metadata"]["name"] for m in run.manifests("Secret")] == [
        naming.TOKEN_KEY_SECRET_NAME
    ]
    assert "defaultSessionToken" not in run.outputs
    assert "defaultSessionUrl" not in run.outputs
    assert run.has("PodTemplate", naming.SESSION_TEMPLATE_NAME)


def test_max_sessions_changes_quota_and_server_settings_only(
    variant: Any, dev_run: StackRun
) -> None:
    run = variant(maxSessions=77)
    assert run.one("ResourceQuota", QUOTA_NAME)["spec"]["hard"]["pods"] == "77"
    assert run.outputs["websocketEnv"]["WEBSOCKET_MAX_SESSIONS"] == "77"
    changed = {
        (m["kind"], m["metadata"]["name"])
        for m in run.manifests()
        if m != dev_run.one(m["kind"], m["metadata"]["name"])
    }
    assert changed == {("ResourceQuota", QUOTA_NAME), ("CronJob", REAPER_NAME)}


def test_a_proxy_config_change_rolls_the_proxy_pods(variant: Any, dev_run: StackRun) -> None:
    run = variant(proxyReadTimeout=600)
    before = _pod_template(dev_run.one("Deployment", naming.PROXY_SERVICE_NAME))
    after = _pod_template(run.one("Deployment", naming.PROXY_SERVICE_NAME))
    assert (
        "proxy_read_timeout 600s;"
        in run.one("ConfigMap", PROXY_CONFIGMAP_NAME)["data"][NGINX_CONF_KEY]
    )
    assert (
        before["metadata"]["annotations"][CHECKSUM_ANNOTATION]
        != after["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    )


def test_existing_namespace_is_used_not_created(variant: Any) -> None:
    run = variant(createNamespace=False)
    assert not run.manifests("Namespace")
    assert run.has("Deployment", naming.PROXY_SERVICE_NAME)


def test_reaper_can_be_turned_off(variant: Any) -> None:
    assert not variant(reaperEnabled=False).manifests("CronJob")


def test_node_selector_and_tolerations_reach_session_pods(variant: Any) -> None:
    run = variant(sessionNodeSelector=["pool=gam"], sessionTolerations=["gam=yes:NoSchedule"])
    spec = _pod_template(run.one("PodTemplate", naming.SESSION_TEMPLATE_NAME))["spec"]
    assert spec["nodeSelector"] == {"pool": "gam"}
    assert spec["tolerations"] == [
        {"key": "gam", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
    ]


def test_pure_builders_and_spec_import_without_pulumi() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pulumi'] = None; sys.modules['pulumi_kubernetes'] = None\n"
        "import components.config, components.outputs, components.proxy_manifests\n"
        "import components.session_manifests, session_runtime.spec\n"
        "cfg = components.config.load_stack_config({'namespace': 'ns'})\n"
        "print(components.session_manifests.session_quota(cfg)['spec']['hard']['pods'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "50"


def test_service_accounts_the_pods_name_are_declared(dev_run: StackRun) -> None:
    accounts = {m["metadata"]["name"]: m for m in dev_run.manifests("ServiceAccount")}
    for kind, name in (
        ("PodTemplate", naming.SESSION_TEMPLATE_NAME),
        ("Deployment", DEFAULT_DEPLOYMENT),
        ("CronJob", REAPER_NAME),
    ):
        assert _pod_template(dev_run.one(kind, name))["spec"]["serviceAccountName"] in accounts
    session_sa = _pod_template(dev_run.one("PodTemplate", naming.SESSION_TEMPLATE_NAME))
    assert (
        accounts[session_sa["spec"]["serviceAccountName"]]["automountServiceAccountToken"] is False
    )
