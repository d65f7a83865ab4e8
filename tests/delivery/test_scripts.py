"""The four classic scripts: shellcheck-clean, --help, usage errors, thin and truthful wrappers.

The CLI and Pulumi are replaced by recording fakes here, so each test shows the
exact command a script runs and that the script exits with that command's status.
The scripts against a real local stack are in test_scripts_local_stack.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
CLASSIC = [
    "apply-websocket-infrastructure.sh",
    "create-websocket-session.sh",
    "test-websocket-session.sh",
    "test-websocket-proxy.sh",
]
WITH_ID = ["create-websocket-session.sh", "test-websocket-session.sh"]
# Only coreutils-level tools: no pulumi, no gamgui-session on this PATH.
BARE_PATH = "/usr/bin:/bin"


def run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def make_fake(tmp_path: Path, name: str, exit_code: int = 0) -> tuple[Path, Path]:
    """Write an executable that records its argv (one per line) and exits with exit_code."""
    log = tmp_path / f"{name}.argv"
    fake = tmp_path / "bin" / name
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{log}'\necho '<end>' >> '{log}'\nexit {exit_code}\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    return fake, log


def calls(log: Path) -> list[list[str]]:
    """Return the recorded invocations, each an argv list."""
    out: list[list[str]] = [[]]
    for line in log.read_text(encoding="utf-8").splitlines():
        if line == "<end>":
            out.append([])
        else:
            out[-1].append(line)
    return [c for c in out if c]


@pytest.mark.parametrize(
    "script", sorted(str(p.relative_to(SCRIPTS)) for p in SCRIPTS.glob("**/*.sh"))
)
def test_every_script_is_shellcheck_clean(script: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap.sh installs it)")
    result = subprocess.run(
        # -x follows the sourced scripts/lib/cli.sh, so it is checked in context too.
        ["shellcheck", "-x", "-P", "SCRIPTDIR", "--severity=style", str(SCRIPTS / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", CLASSIC)
def test_every_classic_script_is_executable_strict_and_helpful(script: str) -> None:
    path = SCRIPTS / script
    assert os.access(path, os.X_OK)
    assert "set -euo pipefail" in path.read_text(encoding="utf-8")
    result = run(script, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: scripts/{script}")
    assert "Exit status" in result.stdout


@pytest.mark.parametrize("script", CLASSIC)
def test_an_unknown_argument_is_a_usage_error(script: str) -> None:
    result = run(script, "--frobnicate")
    assert result.returncode == 2
    assert "unknown argument: --frobnicate" in result.stderr
    assert "Usage:" in result.stderr


@pytest.mark.parametrize("script", WITH_ID)
def test_a_missing_id_is_a_usage_error(script: str, tmp_path: Path) -> None:
    fake, log = make_fake(tmp_path, "gamgui-session")
    result = run(script, env={"GAMGUI_SESSION": str(fake)})
    assert result.returncode == 2
    assert "--id is required" in result.stderr
    assert not log.exists(), "the CLI must not run on a usage error"


@pytest.mark.parametrize("script", WITH_ID)
def test_an_id_without_a_value_is_a_usage_error(script: str) -> None:
    result = run(script, "--id")
    assert result.returncode == 2
    assert "--id needs a value" in result.stderr


@pytest.mark.parametrize("script", WITH_ID)
@pytest.mark.parametrize("bad_id", ["Bad_Id", "-x", "a.b", "x" * 64, "../etc"])
def test_a_bad_id_is_a_usage_error_from_the_real_cli(script: str, bad_id: str) -> None:
    if not (ROOT / ".venv" / "bin" / "gamgui-session").exists():
        pytest.skip("gamgui-session is not installed in .venv (run scripts/bootstrap.sh)")
    result = run(script, "--id", bad_id)
    assert result.returncode == 2, result.stderr
    assert "Invalid session id" in result.stderr


def test_create_maps_its_options_onto_the_cli(tmp_path: Path) -> None:
    fake, log = make_fake(tmp_path, "gamgui-session")
    result = run(
        "create-websocket-session.sh",
        "--id",
        "alice",
        "--command",
        "info domain",
        "--credentials",
        "alice-creds",
        "--json",
        env={"GAMGUI_SESSION": str(fake)},
    )
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        [
            "create",
            "--id=alice",
            "--command",
            "info domain",
            "--credentials-secret",
            "alice-creds",
            "--json",
        ]
    ]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("create-websocket-session.sh", ["--id", "s1"], ["create", "--id=s1"]),
        ("test-websocket-session.sh", ["--id", "s1"], ["test-session", "--id=s1"]),
        ("test-websocket-proxy.sh", [], ["test-proxy"]),
    ],
)
@pytest.mark.parametrize("status", [0, 1, 3])
def test_a_session_script_exits_with_the_cli_status(
    script: str, args: list[str], expected: list[str], status: int, tmp_path: Path
) -> None:
    fake, log = make_fake(tmp_path, "gamgui-session", exit_code=status)
    result = run(script, *args, env={"GAMGUI_SESSION": str(fake)})
    assert result.returncode == status
    assert calls(log) == [expected]


def test_session_scripts_say_so_when_the_cli_is_missing(tmp_path: Path) -> None:
    # A copy of the script outside the repository cannot find .venv/bin/gamgui-session.
    copy = tmp_path / "test-websocket-proxy.sh"
    shutil.copy(SCRIPTS / "test-websocket-proxy.sh", copy)
    shutil.copytree(SCRIPTS / "lib", tmp_path / "lib")
    env = {k: v for k, v in os.environ.items() if k != "GAMGUI_SESSION"}
    result = subprocess.run(
        [str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PATH": BARE_PATH},
    )
    assert result.returncode == 1
    assert "gamgui-session not found" in result.stderr


def test_apply_fails_clearly_without_the_pulumi_cli() -> None:
    if shutil.which("pulumi", path=BARE_PATH):
        pytest.skip("a pulumi CLI is installed in /usr/bin")
    result = run("apply-websocket-infrastructure.sh", env={"PATH": BARE_PATH})
    assert result.returncode == 1
    assert "the pulumi CLI is not installed" in result.stderr


def _apply(
    tmp_path: Path, *args: str, exit_code: int = 0, with_policy: bool = True
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a copy of the apply script in a stub project, with a recording fake pulumi."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: stub\nruntime: python\n", encoding="utf-8")
    if with_policy:
        (project / "policy").mkdir()
    script = project / "scripts" / "apply-websocket-infrastructure.sh"
    shutil.copy(SCRIPTS / script.name, script)
    fake, log = make_fake(tmp_path, "pulumi", exit_code=exit_code)
    result = subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": f"{fake.parent}:{BARE_PATH}"},
    )
    return result, log


def test_apply_sets_the_stack_config_then_runs_up_with_the_policy_pack(tmp_path: Path) -> None:
    result, log = _apply(
        tmp_path,
        "--stack",
        "e2e",
        "--namespace",
        "gam-test",
        "--no-default-session",
        "--image",
        "gamgui-session:e2e",
        "--config",
        "maxSessions=100",
        "--yes",
    )
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        ["stack", "select", "--create", "e2e"],
        ["config", "set", "--stack", "e2e", "--", "namespace", "gam-test"],
        ["config", "set", "--stack", "e2e", "--", "defaultSessionEnabled", "false"],
        ["config", "set", "--stack", "e2e", "--", "sessionImage", "gamgui-session:e2e"],
        ["config", "set", "--stack", "e2e", "--", "maxSessions", "100"],
        ["up", "--stack", "e2e", "--policy-pack", "policy", "--yes"],
    ]


def test_apply_preview_runs_pulumi_preview_on_the_dev_stack_by_default(tmp_path: Path) -> None:
    result, log = _apply(tmp_path, "--preview")
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        ["stack", "select", "--create", "dev"],
        ["preview", "--stack", "dev", "--diff", "--policy-pack", "policy"],
    ]


def test_apply_without_a_policy_directory_runs_without_a_policy_pack(tmp_path: Path) -> None:
    result, log = _apply(tmp_path, "--yes", with_policy=False)
    assert result.returncode == 0, result.stderr
    assert calls(log)[-1] == ["up", "--stack", "dev", "--yes"]


@pytest.mark.parametrize("status", [1, 255])
def test_apply_exits_with_pulumis_failure_status(status: int, tmp_path: Path) -> None:
    result, log = _apply(tmp_path, "--yes", exit_code=status)
    assert result.returncode == status
    assert calls(log) == [["stack", "select", "--create", "dev"]], "stops at the first failure"


def test_the_real_project_has_what_the_apply_script_expects() -> None:
    if not (ROOT / "Pulumi.yaml").exists():
        pytest.skip("Pulumi.yaml is not in the repository yet")
    assert (ROOT / "policy").is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--namespace", "Not_A_Label"], "invalid namespace"),
        (["--stack", "bad stack"], "invalid stack name"),
        (["--config", "novalue"], "config must look like key=value"),
        (["--config", "bad-key=1"], "config must look like key=value"),
        (["--namespace"], "--namespace needs a value"),
    ],
)
def test_apply_rejects_bad_options_before_touching_pulumi(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result, log = _apply(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not log.exists()
