"""With the Pulumi CLI: a real ``pulumi preview`` (with the policy pack) and a render-only ``up``.

No cluster is needed: ``renderYamlToDirectory`` makes the Kubernetes provider write
manifests instead of applying them. The project is copied to a temporary
directory and uses a local file backend there, so the checkout is never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.pulumi.harness import PROJECT, ROOT, dev_config

pytestmark = [pytest.mark.pulumi_cli, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, work / name)
    for package in ("components", "session_runtime", "policy"):
        shutil.copytree(
            ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (work / ".venv").symlink_to(ROOT / ".venv")
    return work


def test_preview_with_the_policy_pack_and_render_only_up(project: Path, tmp_path: Path) -> None:
    from pulumi import automation as auto

    backend = tmp_path / "state"
    backend.mkdir()
    rendered = tmp_path / "rendered"
    env = {
        "PULUMI_BACKEND_URL": backend.as_uri(),
        "PULUMI_CONFIG_PASSPHRASE": "test-only",
        "PATH": os.environ.get("PATH", ""),
    }
    stack = auto.create_or_select_stack(
        stack_name="test",
        work_dir=str(project),
        opts=auto.LocalWorkspaceOptions(env_vars=env),
    )
    config = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in dev_config().items()}
    config["renderYamlToDirectory"] = str(rendered)
    stack.set_all_config({f"{PROJECT}:{k}": auto.ConfigValue(v) for k, v in config.items()})

    preview = stack.preview(policy_packs=[str(project / "policy")])
    assert preview.change_summary.get("create", 0) >= 15

    result = stack.up()
    assert result.outputs["namespace"].value == "gamgui"
    assert result.outputs["defaultSessionToken"].secret is True
    manifests = [
        doc
        for path in sorted(rendered.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert len(manifests) >= 15
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.30.0", strict=True)
