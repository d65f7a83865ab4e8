"""The policy pack's validators, called directly: the real stack passes, broken manifests fail."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from components.session_manifests import QUOTA_NAME
from policy.rules import (
    POLICIES,
    validate_container_security,
    validate_images,
    validate_quota,
    validate_resources,
    validate_session_network_policy,
    validate_session_token,
)
from session_runtime import naming
from tests.pulumi.harness import Declared, StackRun

RESOURCE_VALIDATORS = {
    "pinned-images": validate_images,
    "restricted-containers": validate_container_security,
    "resources-set": validate_resources,
    "session-pods-no-service-account-token": validate_session_token,
}
STACK_VALIDATORS = {
    "session-network-policy": validate_session_network_policy,
    "session-quota-matches-max-sessions": validate_quota,
}


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=None,
    )


def _resource_args(r: Declared) -> ResourceValidationArgs:
    return ResourceValidationArgs(r.typ, r.inputs, f"urn:{r.name}", r.name, _opts(), None, {})


def _stack_args(
    resources: list[Declared], config: dict[str, Any] | None = None
) -> StackValidationArgs:
    return StackValidationArgs(
        [
            PolicyResource(r.typ, r.inputs, f"urn:{r.name}", r.name, _opts(), None, None, [], {})
            for r in resources
        ],
        config or {},
    )


def _violations(validate: Callable[..., None], args: Any) -> list[str]:
    found: list[str] = []
    validate(args, lambda message, urn=None: found.append(message))
    return found


def _resource_violations(validate: Callable[..., None], resources: list[Declared]) -> list[str]:
    return [v for r in resources for v in _violations(validate, _resource_args(r))]


def _edit(
    run: StackRun, kind: str, name: str, change: Callable[[dict[str, Any]], None]
) -> list[Declared]:
    resources = copy.deepcopy(run.resources)
    (target,) = [
        r
        for r in resources
        if r.is_kubernetes_object
        and r.inputs["kind"] == kind
        and r.inputs["metadata"]["name"] == name
    ]
    change(target.inputs)
    return resources


def _proxy_container(m: dict[str, Any]) -> dict[str, Any]:
    return m["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _session_spec(m: dict[str, Any]) -> dict[str, Any]:
    return m["template"]["spec"]  # type: ignore[no-any-return]


def test_the_pack_declares_every_rule_as_mandatory() -> None:
    names = {p.name for p in POLICIES}
    assert names == set(RESOURCE_VALIDATORS) | set(STACK_VALIDATORS)
    assert all(
        p.enforcement_level is not None and p.enforcement_level.value == "mandatory"
        for p in POLICIES
    )


@pytest.mark.parametrize("rule", sorted(RESOURCE_VALIDATORS))
def test_the_real_stack_passes_each_resource_rule(dev_run: StackRun, rule: str) -> None:
    assert _resource_violations(RESOURCE_VALIDATORS[rule], dev_run.resources) == []


@pytest.mark.parametrize("rule", sorted(STACK_VALIDATORS))
def test_the_real_stack_passes_each_stack_rule(dev_run: StackRun, rule: str) -> None:
    assert _violations(STACK_VALIDATORS[rule], _stack_args(dev_run.resources)) == []


def test_quota_rule_passes_with_the_configured_max_sessions(dev_run: StackRun) -> None:
    args = _stack_args(dev_run.resources, {"maxSessions": 10})
    assert _violations(validate_quota, args) == []


@pytest.mark.parametrize("image", ["nginx:latest", "nginx", "registry:5000/nginx"])
def test_unpinned_image_fails_pinned_images(dev_run: StackRun, image: str) -> None:
    broken = _edit(
        dev_run,
        "Deployment",
        naming.PROXY_SERVICE_NAME,
        lambda m: _proxy_container(m).update(image=image),
    )
    (violation,) = _resource_violations(validate_images, broken)
    assert "Deployment websocket-proxy container 'nginx'" in violation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("runAsNonRoot", False, "runAsNonRoot: true"),
        ("readOnlyRootFilesystem", False, "readOnlyRootFilesystem: true"),
        ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation: false"),
    ],
)
def test_weakened_container_fails_restricted_containers(
    dev_run: StackRun, field: str, value: bool, message: str
) -> None:
    broken = _edit(
        dev_run,
        "PodTemplate",
        naming.SESSION_TEMPLATE_NAME,
        lambda m: _session_spec(m)["containers"][0]["securityContext"].update({field: value}),
    )
    (violation,) = _resource_violations(validate_container_security, broken)
    assert "PodTemplate gamgui-session container 'agent'" in violation and message in violation


def test_container_without_limits_fails_resources_set(dev_run: StackRun) -> None:
    broken = _edit(
        dev_run,
        "CronJob",
        "gamgui-session-reaper",
        lambda m: m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "resources"
        ].pop("limits"),
    )
    (violation,) = _resource_violations(validate_resources, broken)
    assert "limits.cpu, limits.memory" in violation


def test_session_pod_with_token_fails_no_service_account_token(dev_run: StackRun) -> None:
    broken = _edit(
        dev_run,
        "PodTemplate",
        naming.SESSION_TEMPLATE_NAME,
        lambda m: _session_spec(m).pop("automountServiceAccountToken"),
    )
    (violation,) = _resource_violations(validate_session_token, broken)
    assert "automountServiceAccountToken: false" in violation


def test_missing_session_network_policy_fails(dev_run: StackRun) -> None:
    broken = _edit(
        dev_run,
        "NetworkPolicy",
        naming.SESSION_SERVICE_NAME,
        lambda m: m["spec"]["podSelector"].update(matchLabels={"app": "other"}),
    )
    (violation,) = _violations(validate_session_network_policy, _stack_args(broken))
    assert "no NetworkPolicy" in violation


def test_quota_not_matching_max_sessions_fails(dev_run: StackRun) -> None:
    broken = _edit(
        dev_run, "ResourceQuota", QUOTA_NAME, lambda m: m["spec"]["hard"].update(pods="99")
    )
    (violation,) = _violations(validate_quota, _stack_args(broken))
    assert violation == "ResourceQuota gamgui-sessions: pods is 99, max sessions is 10"
    args = _stack_args(dev_run.resources, {"maxSessions": 20})
    assert _violations(validate_quota, args) == [
        "ResourceQuota gamgui-sessions: pods is 10, max sessions is 20"
    ]


def test_quota_without_terminating_scope_or_deadline_fails(dev_run: StackRun) -> None:
    broken = _edit(dev_run, "ResourceQuota", QUOTA_NAME, lambda m: m["spec"].pop("scopes"))
    assert _violations(validate_quota, _stack_args(broken)) == [
        "no ResourceQuota with scopes [Terminating] limits the session pods"
    ]
    no_deadline = _edit(
        dev_run,
        "PodTemplate",
        naming.SESSION_TEMPLATE_NAME,
        lambda m: _session_spec(m).pop("activeDeadlineSeconds"),
    )
    assert _violations(validate_quota, _stack_args(no_deadline)) == [
        "PodTemplate gamgui-session: session pods need activeDeadlineSeconds"
    ]
