"""The session image's Dockerfile, read as data: pins, user, entrypoint, labels, context.

No Docker engine here; the e2e workflow builds the image for real.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from session_runtime import naming

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "session_image" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name] = value
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inner\n    && y\nUSER 1\n")
    assert parsed == [("FROM", "a AS b"), ("RUN", "x  && y"), ("USER", "1")]


def test_every_base_image_is_a_slim_python_tag_pinned_by_digest(
    instructions: list[tuple[str, str]],
) -> None:
    args = _args(instructions)
    froms = [rest.split() for k, rest in instructions if k == "FROM"]
    stages = {words[2] for words in froms if len(words) == 3 and words[1].upper() == "AS"}
    assert froms
    for words in froms:
        ref = words[0]
        image = args[ref[2:-1]] if ref.startswith("${") else ref
        if image in stages:
            continue  # a reference to an earlier stage
        match = re.fullmatch(r"python:(?P<tag>[\w.-]+)@sha256:(?P<digest>[0-9a-f]{64})", image)
        assert match, f"{image} is not python:<tag>@sha256:<digest>"
        assert "slim" in match["tag"]


def test_gam_is_pinned_to_an_exact_version(instructions: list[tuple[str, str]]) -> None:
    version = _args(instructions)["GAM_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert '"gam7==${GAM_VERSION}"' in runs


def test_the_package_is_installed_with_only_the_agent_extra(
    instructions: list[tuple[str, str]],
) -> None:
    runs = " ".join(rest for k, rest in _final_stage(instructions) if k == "RUN")
    extras = re.findall(r"\[([a-z,]+)\]", runs)
    assert extras == ["agent"]
    assert "-e " not in runs and "--editable" not in runs


def test_the_agent_runs_as_a_numeric_non_root_user(instructions: list[tuple[str, str]]) -> None:
    users = [rest for k, rest in _final_stage(instructions) if k == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0
    after_user = _final_stage(instructions)
    last_user = max(i for i, (k, _) in enumerate(after_user) if k == "USER")
    assert not [k for k, _ in after_user[last_user:] if k == "RUN"], "RUN after USER runs as user"


def test_the_entrypoint_is_the_agent_in_exec_form(instructions: list[tuple[str, str]]) -> None:
    final = _final_stage(instructions)
    assert final[0][1].split()[-2:] == ["AS", "session"], "the default target is the session"
    entry = [rest for k, rest in final if k == "ENTRYPOINT"]
    assert len(entry) == 1
    assert json.loads(entry[0]) == ["python", "-m", "session_runtime.agent"]
    assert not [k for k, _ in final if k == "CMD"]


def test_the_tools_target_has_the_cli_with_the_server_extra_for_the_reaper(
    instructions: list[tuple[str, str]],
) -> None:
    start = next(i for i, (k, r) in enumerate(instructions) if k == "FROM" and r.endswith(" tools"))
    end = next(i for i, (k, _) in enumerate(instructions) if k == "FROM" and i > start)
    stage = instructions[start:end]
    runs = " ".join(rest for k, rest in stage if k == "RUN")
    assert re.findall(r"\[([a-z,]+)\]", runs) == ["server"]
    users = [rest for k, rest in stage if k == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1] != "0"
    assert [json.loads(rest) for k, rest in stage if k == "ENTRYPOINT"] == [["gamgui-session"]]


def test_the_image_exposes_the_agent_port(instructions: list[tuple[str, str]]) -> None:
    exposed = [rest for k, rest in _final_stage(instructions) if k == "EXPOSE"]
    assert exposed == [str(naming.AGENT_PORT)]
    env = " ".join(rest for k, rest in _final_stage(instructions) if k == "ENV")
    assert f"{naming.ENV_AGENT_PORT}={naming.AGENT_PORT}" in env


def test_the_image_carries_oci_labels(instructions: list[tuple[str, str]]) -> None:
    labels = " ".join(rest for k, rest in _final_stage(instructions) if k == "LABEL")
    pairs = dict(tok.split("=", 1) for tok in shlex.split(labels))
    for key in ("title", "description", "version", "licenses"):
        assert pairs.get(f"org.opencontainers.image.{key}"), key


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        candidates = [path, *(str(p) for p in Path(path).parents if str(p) != ".")]
        if any(
            fnmatch.fnmatch(c, body) or fnmatch.fnmatch(c, body.replace("**/", ""))
            for c in candidates
        ):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "session_runtime/agent/__init__.py"]
)
def test_the_build_context_keeps_what_the_image_copies(
    path: str, ignore_patterns: list[str]
) -> None:
    assert (ROOT / path).exists()
    assert not _ignored(path, ignore_patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "session_runtime/.env",
        ".tools/actionlint/x",
        "oauth2service.json",
        "session_runtime/__pycache__/x.pyc",
    ],
)
def test_the_build_context_leaves_out_secrets_and_clutter(
    path: str, ignore_patterns: list[str]
) -> None:
    assert _ignored(path, ignore_patterns)


def test_every_copied_source_exists_in_the_repository(
    instructions: list[tuple[str, str]],
) -> None:
    for keyword, rest in instructions:
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source


#: Installed here by other extras, absent from the session image (agent extra only).
NOT_IN_THE_IMAGE = (
    "lightkube",
    "websocket",
    "httpx",
    "pulumi",
    "pulumi_kubernetes",
    "pulumi_policy",
    "pulumi_random",
    "yaml",
    "psutil",
    "kubernetes_validate",
)


def test_the_agent_imports_without_anything_the_agent_extra_leaves_out() -> None:
    script = (
        "import importlib, pkgutil, sys\n"
        f"for name in {NOT_IN_THE_IMAGE!r}:\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "import session_runtime.agent as agent\n"
        "for mod in pkgutil.iter_modules(agent.__path__):\n"
        "    if mod.name != '__main__':\n"
        "        importlib.import_module(f'session_runtime.agent.{mod.name}')\n"
        "print('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
