"""Stack config: bad values stop the program naming the key; Pulumi.yaml and the model agree."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from components.config import (
    CONFIG_KEYS,
    SECRET_KEYS,
    StackConfig,
    StackConfigError,
    load_stack_config,
)
from tests.pulumi.harness import PROJECT, ROOT, dev_config, run_stack


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        ({"namespace": None}, "namespace", "Field required"),
        ({"maxSessions": 0}, "maxSessions", "greater than or equal to 1"),
        ({"proxyImage": "nginx:latest"}, "proxyImage", "uses 'latest'"),
        ({"sessionImage": "ghcr.io/gamgui/gamgui-session"}, "sessionImage", "has no tag"),
        ({"exposure": "public"}, "exposure", "'none', 'ingress' or 'loadbalancer'"),
        ({"proxyReplicas": "two"}, "proxyReplicas", "valid integer"),
        ({"namespace": "Bad_NS"}, "namespace", "Invalid session id"),
        ({"sessionMemoryLimit": "lots"}, "sessionMemoryLimit", "Kubernetes quantity"),
        ({"reaperSchedule": "often"}, "reaperSchedule", "cron schedule"),
        ({"exposure": "ingress"}, "", "ingressHost is required"),
        ({"sessionTolerations": ["gam:Sometimes"]}, "sessionTolerations", "effect must be"),
    ],
)
def test_bad_stack_config_stops_the_program_naming_the_key(
    changes: dict[str, Any], key: str, problem: str
) -> None:
    config = dev_config()
    for k, v in changes.items():
        if v is None:
            config.pop(k)
        else:
            config[k] = v
    with pytest.raises(pulumi.RunError) as info:
        run_stack(config)
    message = str(info.value)
    assert message.startswith("invalid stack config:")
    assert f"{PROJECT}:{key}" in message
    assert problem in message


def test_several_bad_keys_are_all_named() -> None:
    with pytest.raises(StackConfigError) as info:
        load_stack_config({"namespace": "ok", "maxSessions": "0", "agentPort": "80"})
    assert f"{PROJECT}:maxSessions" in str(info.value)
    assert f"{PROJECT}:agentPort" in str(info.value)


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(StackConfigError, match=f"{PROJECT}:maxSesions: unknown config key"):
        load_stack_config({"namespace": "ok", "maxSesions": "3"})


def test_array_keys_must_be_json() -> None:
    with pytest.raises(StackConfigError, match="sessionNodeSelector: must be a JSON array"):
        load_stack_config({"namespace": "ok", "sessionNodeSelector": "pool=gam"})


def _project_config() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert data["name"] == PROJECT
    assert data["runtime"]["name"] == "python"
    return data["config"]  # type: ignore[no-any-return]


def test_pulumi_yaml_declares_exactly_the_model_keys() -> None:
    declared = _project_config()
    assert set(declared) == set(CONFIG_KEYS)
    for key, entry in declared.items():
        assert entry.get("description"), key
        assert entry.get("type") in ("string", "integer", "boolean", "array"), key
    # Optional secrets are documented, not declared (a declared key without default is required).
    text = (ROOT / "Pulumi.yaml").read_text()
    assert all(f"#   {key}" in text for key in SECRET_KEYS)


def test_pulumi_yaml_defaults_are_the_model_defaults() -> None:
    declared = _project_config()
    as_strings = {
        key: json.dumps(entry["default"])
        if isinstance(entry["default"], list)
        else str(entry["default"]).lower()
        if isinstance(entry["default"], bool)
        else str(entry["default"])
        for key, entry in declared.items()
        if "default" in entry
    }
    assert "namespace" not in as_strings  # required: a missing namespace is an error
    from_yaml = load_stack_config({**as_strings, "namespace": "ns"})
    assert from_yaml == StackConfig(namespace="ns")


def test_dev_stack_config_is_valid_and_uses_only_declared_keys() -> None:
    config = dev_config()
    assert set(config) <= set(CONFIG_KEYS)
    cfg = load_stack_config({k: str(v) for k, v in config.items()})
    assert cfg.namespace == "gamgui"
