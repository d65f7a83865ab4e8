"""The pod admission policy, evaluated with a CEL engine against stamped and forged pods."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import celpy
import pytest

from components.admission_manifests import (
    SESSION_POD_POLICY_NAME,
    policy_name,
    session_pod_policy,
    session_pod_policy_binding,
)
from components.config import StackConfig, load_stack_config
from session_runtime import naming, spec
from session_runtime.rbac import RUNTIME_SERVICE_ACCOUNT
from tests.pulumi.harness import StackRun, dev_config

Pod = dict[str, Any]


@pytest.fixture(scope="module")
def cfg() -> StackConfig:
    """The dev stack's validated config (as the program loads it)."""
    return load_stack_config({k: _raw(v) for k, v in dev_config().items()})


def _raw(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _stamped(cfg: StackConfig, session_id: str = "alice-1") -> Pod:
    return spec.stamp_session_pod(
        spec.session_template_pod(cfg.session_pod_config(), cfg.namespace),
        session_id=session_id,
        namespace=cfg.namespace,
        command="info domain",
        credentials_secret="user-creds",
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


def _failures(cfg: StackConfig, pod: Pod) -> list[str]:
    """Return the messages of the validations ``pod`` fails (empty: admitted)."""
    env = celpy.Environment()
    activation = {"object": celpy.json_to_cel(pod)}
    failed = []
    for rule in session_pod_policy(cfg)["spec"]["validations"]:
        program = env.program(env.compile(rule["expression"]))
        if not bool(program.evaluate(activation)):
            failed.append(rule["message"])
    return failed


def test_a_pod_stamped_from_the_template_is_admitted(cfg: StackConfig) -> None:
    assert _failures(cfg, _stamped(cfg)) == []


def _image(pod: Pod) -> None:
    pod["spec"]["containers"][0]["image"] = "evil.example/miner:latest"


def _host_path(pod: Pod) -> None:
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})


def _other_token(pod: Pod) -> None:
    for volume in pod["spec"]["volumes"]:
        if volume["name"] == spec.TOKEN_VOLUME:
            volume["secret"]["secretName"] = naming.session_token_secret_name("bob")


def _token_key(pod: Pod) -> None:
    for volume in pod["spec"]["volumes"]:
        if volume["name"] == spec.CREDENTIALS_VOLUME:
            volume["secret"]["secretName"] = naming.TOKEN_KEY_SECRET_NAME


def _init(pod: Pod) -> None:
    pod["spec"]["initContainers"] = [copy.deepcopy(pod["spec"]["containers"][0])]


def _handoff_command(pod: Pod) -> None:
    (handoff,) = pod["spec"]["initContainers"]
    handoff["command"] = ["sh", "-c", "cat /var/run/secrets/* > /dev/termination-log"]


def _handoff_image(pod: Pod) -> None:
    (handoff,) = pod["spec"]["initContainers"]
    handoff["image"] = "evil.example/miner:latest"


def _env_from_secret(pod: Pod) -> None:
    pod["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gam-credentials", "key": "k"}}}
    )


def _labels(pod: Pod) -> None:
    pod["metadata"]["labels"][naming.LABEL_COMPONENT] = "proxy"


def _name(pod: Pod) -> None:
    pod["metadata"]["name"] = "gamgui-session-someone-else"


def _service_account(pod: Pod) -> None:
    pod["spec"]["serviceAccountName"] = RUNTIME_SERVICE_ACCOUNT
    pod["spec"]["automountServiceAccountToken"] = True


def _lifetime(pod: Pod) -> None:
    del pod["spec"]["activeDeadlineSeconds"]


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (_image, "session image"),
        (_host_path, "Secret and emptyDir volumes"),
        (_other_token, "own token Secret"),
        (_token_key, "token key is never mounted"),
        (_init, "no init containers but the token hand-off"),
        (_handoff_command, "no init containers but the token hand-off"),
        (_handoff_image, "session image"),
        (_env_from_secret, "environment from Secrets"),
        (_labels, "session labels"),
        (_name, "session labels and the name"),
        (_service_account, "ServiceAccount"),
        (_lifetime, "hard lifetime"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_a_forged_pod_is_refused_with_the_rule_it_breaks(
    cfg: StackConfig, forge: Callable[[Pod], None], message: str
) -> None:
    pod = _stamped(cfg)
    forge(pod)
    failed = _failures(cfg, pod)
    assert len(failed) == 1 and message in failed[0], failed


def test_the_policy_applies_to_the_runtimes_creates_in_its_namespace_only(
    cfg: StackConfig,
) -> None:
    policy, binding = session_pod_policy(cfg), session_pod_policy_binding(cfg)
    (condition,) = policy["spec"]["matchConditions"]
    env = celpy.Environment()
    program = env.program(env.compile(condition["expression"]))
    runtime = f"system:serviceaccount:{cfg.namespace}:{RUNTIME_SERVICE_ACCOUNT}"
    for user, expected in (
        (runtime, True),
        ("system:serviceaccount:kube-system:replicaset", False),
    ):
        request = celpy.json_to_cel({"userInfo": {"username": user}})
        assert bool(program.evaluate({"request": request})) is expected
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": cfg.namespace}
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["metadata"]["name"] == f"{SESSION_POD_POLICY_NAME}-{cfg.namespace}"


def test_the_stack_declares_the_policy_and_its_binding(dev_run: StackRun, cfg: StackConfig) -> None:
    assert dev_run.has("ValidatingAdmissionPolicy", policy_name(cfg))
    assert dev_run.has("ValidatingAdmissionPolicyBinding", policy_name(cfg))
