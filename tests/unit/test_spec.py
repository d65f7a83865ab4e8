"""The session pod spec: pure functions, checked as data and against the Kubernetes schema."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from session_runtime import naming
from session_runtime.errors import InvalidNameError, InvalidSessionIdError
from session_runtime.spec import (
    CREDENTIALS_DIR,
    CREDENTIALS_VOLUME,
    GAMCFG_DIR,
    TOKEN_DIR,
    TOKEN_HANDOFF_CONTAINER,
    TOKEN_HANDOFF_VOLUME,
    TOKEN_SECRET_DIR,
    SessionPodConfig,
    session_template_pod,
    session_token_secret,
    stamp_session_pod,
)

K8S_VERSION = "1.30.0"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.fixture
def config() -> SessionPodConfig:
    return SessionPodConfig(image="ghcr.io/example/gamgui-session:0.1.0")


@pytest.fixture
def template(config: SessionPodConfig) -> dict[str, Any]:
    return session_template_pod(config, "gamgui")


def _stamp(template: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "session_id": "abc",
        "namespace": "gamgui",
        "command": None,
        "credentials_secret": None,
        "created_at": CREATED,
    }
    kwargs.update(overrides)
    return stamp_session_pod(template, **kwargs)


def _agent(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    assert container["name"] == naming.SESSION_CONTAINER_NAME
    return container  # type: ignore[no-any-return]


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _agent(pod)["env"]}


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)  # type: ignore[no-any-return]


def test_template_is_a_valid_pod_template(template: dict[str, Any]) -> None:
    _validate(
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": naming.SESSION_TEMPLATE_NAME, "namespace": "gamgui"},
            "template": template,
        }
    )


def test_stamped_pod_is_a_valid_pod(template: dict[str, Any]) -> None:
    _validate(_stamp(template, command="info domain", credentials_secret="user-creds"))


def test_stamped_pod_carries_the_session_names_and_labels(template: dict[str, Any]) -> None:
    pod = _stamp(template, session_id="s-0123")
    meta = pod["metadata"]
    assert meta["name"] == naming.session_pod_name("s-0123")
    assert meta["namespace"] == "gamgui"
    assert naming.session_labels("s-0123").items() <= meta["labels"].items()
    assert pod["spec"]["hostname"] == "s-0123"
    assert pod["spec"]["subdomain"] == naming.SESSION_SERVICE_NAME
    assert meta["annotations"][naming.ANNOTATION_CREATED_AT] == "2026-01-02T03:04:05Z"


def test_stamped_pod_runs_the_agent_with_the_session_environment(
    template: dict[str, Any],
) -> None:
    pod = _stamp(template, command="info domain")
    container = _agent(pod)
    assert container["command"] == ["python", "-m", "session_runtime.agent"]
    env = _env(pod)
    assert env[naming.ENV_SESSION_ID] == "abc"
    assert env[naming.ENV_SESSION_COMMAND] == "info domain"
    assert env[naming.ENV_SESSION_TOKEN_FILE] == f"{TOKEN_DIR}/{naming.TOKEN_SECRET_KEY}"
    assert naming.ENV_SESSION_TOKEN not in env
    assert env[naming.ENV_AGENT_PORT] == str(naming.AGENT_PORT)
    assert env[naming.ENV_CREDENTIALS_DIR] == CREDENTIALS_DIR
    assert env[naming.ENV_GAMCFGDIR] == GAMCFG_DIR
    assert pod["metadata"]["annotations"][naming.ANNOTATION_COMMAND] == "info domain"


def test_no_command_means_no_command_env_or_annotation(template: dict[str, Any]) -> None:
    pod = _stamp(template, command=None)
    assert naming.ENV_SESSION_COMMAND not in _env(pod)
    assert naming.ANNOTATION_COMMAND not in pod["metadata"]["annotations"]


def test_token_secret_reaches_the_agent_only_through_a_memory_backed_hand_off(
    template: dict[str, Any],
) -> None:
    pod = _stamp(template, session_id="xyz")
    volume = _volume(pod, "session-token")
    assert volume["secret"]["secretName"] == naming.session_token_secret_name("xyz")
    agent_mounts = {m["name"]: m for m in _agent(pod)["volumeMounts"]}
    assert "session-token" not in agent_mounts  # GAM's container never sees the Secret
    assert agent_mounts[TOKEN_HANDOFF_VOLUME] == {
        "name": TOKEN_HANDOFF_VOLUME,
        "mountPath": TOKEN_DIR,
    }
    assert _volume(pod, TOKEN_HANDOFF_VOLUME)["emptyDir"]["medium"] == "Memory"
    (init,) = pod["spec"]["initContainers"]
    assert init["name"] == TOKEN_HANDOFF_CONTAINER
    assert init["image"] == _agent(pod)["image"]
    assert init["command"] == [
        "cp",
        f"{TOKEN_SECRET_DIR}/{naming.TOKEN_SECRET_KEY}",
        f"{TOKEN_DIR}/{naming.TOKEN_SECRET_KEY}",
    ]
    init_mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert init_mounts["session-token"]["readOnly"] is True
    # Stamping twice (a template read back) keeps one hand-off, not two.
    again = stamp_session_pod(
        {"metadata": pod["metadata"], "spec": pod["spec"]},
        session_id="xyz",
        namespace="gamgui",
        command=None,
        credentials_secret=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert len(again["spec"]["initContainers"]) == 1
    assert sum(v["name"] == TOKEN_HANDOFF_VOLUME for v in again["spec"]["volumes"]) == 1


def test_credentials_are_mounted_read_only_without_subpath(template: dict[str, Any]) -> None:
    pod = _stamp(template)
    mounts = _agent(pod)["volumeMounts"]
    assert all("subPath" not in m for m in mounts)
    cred = next(m for m in mounts if m["name"] == CREDENTIALS_VOLUME)
    assert cred["readOnly"] is True and cred["mountPath"] == CREDENTIALS_DIR
    secret = _volume(pod, CREDENTIALS_VOLUME)["secret"]
    assert secret["secretName"] == naming.DEFAULT_CREDENTIALS_SECRET
    assert secret["optional"] is True
    annotations = pod["metadata"]["annotations"]
    assert annotations[naming.ANNOTATION_CREDENTIALS_SECRET] == naming.DEFAULT_CREDENTIALS_SECRET


def test_a_given_credentials_secret_replaces_the_default(template: dict[str, Any]) -> None:
    pod = _stamp(template, credentials_secret="alice-gam")
    assert _volume(pod, CREDENTIALS_VOLUME)["secret"]["secretName"] == "alice-gam"
    assert pod["metadata"]["annotations"][naming.ANNOTATION_CREDENTIALS_SECRET] == "alice-gam"


def test_gamcfgdir_is_memory_backed(template: dict[str, Any]) -> None:
    pod = _stamp(template)
    assert _volume(pod, "gamcfg")["emptyDir"]["medium"] == "Memory"
    mount = next(m for m in _agent(pod)["volumeMounts"] if m["name"] == "gamcfg")
    assert mount["mountPath"] == GAMCFG_DIR


def test_session_pod_is_hardened(template: dict[str, Any]) -> None:
    pod = _stamp(template)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 28800
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = _agent(pod)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_hit_the_health_path_on_the_agent_port(template: dict[str, Any]) -> None:
    container = _agent(_stamp(template))
    (port,) = container["ports"]
    assert port == {
        "name": naming.AGENT_PORT_NAME,
        "containerPort": naming.AGENT_PORT,
        "protocol": "TCP",
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {
            "path": naming.HEALTH_PATH,
            "port": naming.AGENT_PORT_NAME,
        }


def test_config_reaches_the_template() -> None:
    config = SessionPodConfig(
        image="registry.example/s@sha256:" + "a" * 64,
        agent_port=9000,
        idle_timeout_s=0,
        max_lifetime_s=600,
        node_selector={"pool": "gam"},
        tolerations=[{"key": "gam", "operator": "Exists", "effect": "NoSchedule"}],
        gam_bin="/opt/gam/gam",
    )
    pod = _stamp(session_template_pod(config, "ns1"), namespace="ns1")
    _validate(pod)
    assert pod["spec"]["activeDeadlineSeconds"] == 600
    assert pod["spec"]["nodeSelector"] == {"pool": "gam"}
    assert pod["spec"]["tolerations"][0]["key"] == "gam"
    env = _env(pod)
    assert env[naming.ENV_IDLE_TIMEOUT] == "0"
    assert env[naming.ENV_AGENT_PORT] == "9000"
    assert env[naming.ENV_GAM_BIN] == "/opt/gam/gam"
    assert _agent(pod)["ports"][0]["containerPort"] == 9000


def test_stamping_leaves_the_template_unchanged(template: dict[str, Any]) -> None:
    before = copy.deepcopy(template)
    _stamp(template, command="info domain", credentials_secret="x-creds")
    assert template == before


def test_restamping_a_stamped_spec_does_not_duplicate_parts(template: dict[str, Any]) -> None:
    once = _stamp(template, session_id="one", command="a")
    twice = _stamp(once, session_id="two")
    names = [v["name"] for v in twice["spec"]["volumes"]]
    assert len(names) == len(set(names))
    env_names = [e["name"] for e in _agent(twice)["env"]]
    assert len(env_names) == len(set(env_names))
    assert naming.ENV_SESSION_COMMAND not in env_names
    assert _env(twice)[naming.ENV_SESSION_ID] == "two"


def test_naive_and_offset_times_are_stored_as_utc(template: dict[str, Any]) -> None:
    naive = _stamp(template, created_at=datetime(2026, 1, 2, 3, 4, 5))
    offset = _stamp(template, created_at=CREATED.astimezone(timezone(timedelta(hours=2))))
    for pod in (naive, offset):
        assert pod["metadata"]["annotations"][naming.ANNOTATION_CREATED_AT] == (
            "2026-01-02T03:04:05Z"
        )


@pytest.mark.parametrize("bad_id", ["", "UPPER", "a.b", "-x", "x" * 64, "a/b"])
def test_bad_session_ids_are_rejected(template: dict[str, Any], bad_id: str) -> None:
    with pytest.raises(InvalidSessionIdError, match="Invalid session id"):
        _stamp(template, session_id=bad_id)


def test_bad_credentials_secret_name_is_rejected(template: dict[str, Any]) -> None:
    with pytest.raises(InvalidNameError, match="Invalid credentials secret 'Bad_Name'"):
        _stamp(template, credentials_secret="Bad_Name")


def test_command_with_nul_is_rejected(template: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="NUL"):
        _stamp(template, command="info\x00domain")


def test_template_without_the_agent_container_is_rejected(template: dict[str, Any]) -> None:
    broken = copy.deepcopy(template)
    broken["spec"]["containers"][0]["name"] = "other"
    with pytest.raises(ValueError, match="no container named 'agent'"):
        _stamp(broken)


@pytest.mark.parametrize(
    ("field", "value"),
    [("image", ""), ("agent_port", 80), ("max_lifetime_s", 0), ("credentials_secret", "A_B")],
)
def test_bad_pod_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        SessionPodConfig(**{"image": "img:1", field: value})


def test_token_secret_manifest_is_valid_and_labelled() -> None:
    secret = session_token_secret("abc", "gamgui", "t0ken-value")
    _validate(secret)
    assert secret["metadata"]["name"] == naming.session_token_secret_name("abc")
    assert secret["metadata"]["labels"] == naming.session_labels("abc")
    assert secret["stringData"] == {naming.TOKEN_SECRET_KEY: "t0ken-value"}


def test_empty_token_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        session_token_secret("abc", "gamgui", " ")
