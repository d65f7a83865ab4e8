"""Run the real ``__main__.py`` under Pulumi mocks and collect what it declares.

Each run happens in a fresh ``contextvars.Context``: Pulumi keeps its settings,
config and root stack in context variables, so runs cannot leak into each other.
Config is injected the way the CLI does it: ``<project>:<key>`` string values,
arrays as JSON, secret keys listed.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "gamgui-websocket"
GENERATED_TOKEN = "generated-token-for-tests"
_SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _unsecret(value: Any) -> Any:
    """Strip Pulumi's secret wrappers from mock inputs, recursively."""
    if isinstance(value, dict):
        if _SECRET_SIG in value and "value" in value:
            return _unsecret(value["value"])
        return {k: _unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecret(v) for v in value]
    return value


@dataclass
class Declared:
    """One resource the program declared: type token, logical name, inputs."""

    typ: str
    name: str
    inputs: dict[str, Any]

    @property
    def is_kubernetes_object(self) -> bool:
        return self.typ.startswith("kubernetes:") and not self.typ.startswith("pulumi:providers:")

    def manifest(self) -> dict[str, Any]:
        """The inputs as a Kubernetes manifest (they are camelCase already)."""
        return copy.deepcopy(self.inputs)


@dataclass
class StackRun:
    """What one program run declared and exported."""

    resources: list[Declared]
    outputs: dict[str, Any] = field(default_factory=dict)

    def manifests(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = [r.manifest() for r in self.resources if r.is_kubernetes_object]
        return [m for m in found if kind is None or m.get("kind") == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        matches = [m for m in self.manifests(kind) if m["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def has(self, kind: str, name: str) -> bool:
        return any(m["metadata"]["name"] == name for m in self.manifests(kind))


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.declared: list[Declared] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = _unsecret(dict(args.inputs))
        self.declared.append(Declared(args.typ, args.name, inputs))
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = GENERATED_TOKEN
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def dev_config() -> dict[str, Any]:
    """Return Pulumi.dev.yaml's config, keys without the project prefix."""
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    prefix = f"{PROJECT}:"
    return {k.removeprefix(prefix): v for k, v in data["config"].items()}


def _as_config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def run_stack(config: dict[str, Any], *, secrets: dict[str, str] | None = None) -> StackRun:
    """Run ``__main__.py`` with ``config`` (and secret values) under mocks.

    Args:
        config: key (without project prefix) -> value, as in a stack file.
        secrets: secret keys -> values.

    Raises:
        whatever the program raises (e.g. ``pulumi.RunError`` for bad config).
    """

    def body() -> StackRun:
        mocks = _Mocks()
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="dev", preview=False)
        values = {f"{PROJECT}:{k}": _as_config_string(v) for k, v in config.items()}
        secret_keys = []
        for key, value in (secrets or {}).items():
            values[f"{PROJECT}:{key}"] = value
            secret_keys.append(f"{PROJECT}:{key}")
        set_all_config(values, secret_keys)
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(MAIN), run_name="__main__")))
        root = get_root_resource()
        outputs: dict[str, Any] = {}
        for name, value in (getattr(root, "outputs", None) or {}).items():
            outputs[name] = _sync_await(pulumi.Output.from_input(value).future())
        return StackRun(mocks.declared, outputs)

    # A loop of our own: one left closed by an asyncio test must not break the run.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return contextvars.Context().run(body)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
