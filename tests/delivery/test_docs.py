"""The operations docs stay true to the code: commands, settings, config keys, names, links."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from components.config import CONFIG_KEYS, SECRET_KEYS
from session_runtime import errors
from session_runtime.cli import build_parser
from session_runtime.settings import ENV_PREFIX, WebSocketSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OWN_DOCS = ["architecture", "operations", "security", "troubleshooting", "server-integration"]
PATHS = [DOCS / f"{name}.md" for name in OWN_DOCS]
#: Every page a user reads: the README and all of docs/.
ALL_PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
ALL_IDS = [str(p.relative_to(ROOT)) for p in ALL_PAGES]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _cli_commands() -> set[str]:
    """Return every command path of the CLI: ``create``, ``local up`` ..."""
    out: set[str] = set()

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.add(f"{prefix}{name}")
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return out


def _smoke_steps() -> set[str]:
    source = (ROOT / "session_runtime" / "smoke.py").read_text(encoding="utf-8")
    return set(re.findall(r'rec\.step\("([a-z-]+)"\)', source))


@pytest.mark.parametrize("path", ALL_PAGES, ids=ALL_IDS)
def test_every_relative_link_points_at_a_file_that_exists(path: Path) -> None:
    prose = re.sub(r"```.*?```", "", _text(path), flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_the_architecture_page_has_a_mermaid_diagram() -> None:
    text = _text(DOCS / "architecture.md")
    assert "```mermaid\nflowchart" in text


@pytest.mark.parametrize("path", ALL_PAGES, ids=ALL_IDS)
def test_every_cli_command_named_is_a_real_command(path: Path) -> None:
    commands = _cli_commands()
    pattern = r"(?:^|[`(])gamgui-session ((?:local )?[a-z][a-z-]+)"
    named = re.findall(pattern, _text(path), flags=re.MULTILINE)
    if path in PATHS:
        assert named or path.name == "security.md"
    unknown = sorted({n for n in named if n not in commands})
    assert not unknown, f"{path.name} names commands the CLI does not have: {unknown}"


@pytest.mark.parametrize("path", ALL_PAGES, ids=ALL_IDS)
def test_every_websocket_setting_named_exists(path: Path) -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in WebSocketSettings.model_fields}
    named = set(re.findall(r"\bWEBSOCKET_[A-Z_]*[A-Z]\b", _text(path)))
    unknown = sorted(named - fields)
    assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("path", PATHS, ids=OWN_DOCS)
def test_every_stack_config_key_set_in_an_example_exists(path: Path) -> None:
    text = _text(path)
    keys = set(re.findall(r"--config[ =\"]+([A-Za-z]+)=", text))
    keys |= set(re.findall(r"pulumi config set (?:--stack \S+ )?(?:--secret )?([A-Za-z]+)", text))
    unknown = sorted(keys - set(CONFIG_KEYS) - set(SECRET_KEYS))
    assert not unknown, f"{path.name} sets config keys that do not exist: {unknown}"


@pytest.mark.parametrize("path", PATHS, ids=OWN_DOCS)
def test_every_backquoted_camel_case_stack_key_exists(path: Path) -> None:
    known = set(CONFIG_KEYS) | set(SECRET_KEYS)
    prefixes = ("proxy", "session", "default", "reaper", "max", "idle", "ingress", "agent")
    named = {
        word
        for word in re.findall(r"`([a-z]+[A-Z][A-Za-z]+)`", _text(path))
        if word.startswith(prefixes)
    }
    unknown = sorted(named - known)
    assert not unknown, f"{path.name} names stack config keys that do not exist: {unknown}"


def test_troubleshooting_has_a_section_for_each_classic_error() -> None:
    text = _text(DOCS / "troubleshooting.md")
    headings = set(re.findall(r"^## (.+)$", text, flags=re.MULTILINE))
    assert errors.SessionsDisabledError().message in headings
    assert errors.SessionJoinError().message in headings
    assert errors.SessionConnectError().message in headings


def test_troubleshooting_names_only_real_smoke_steps() -> None:
    steps = _smoke_steps()
    assert {"health", "exists", "ready", "handshake", "command"} <= steps
    text = _text(DOCS / "troubleshooting.md")
    named = set(re.findall(r"fails at `([a-z-]+)`", text))
    named |= set(re.findall(r"passes `([a-z-]+)`", text))
    assert named, "troubleshooting names no smoke step"
    assert not sorted(named - steps)


@pytest.mark.parametrize("path", PATHS, ids=OWN_DOCS)
def test_every_error_class_named_exists(path: Path) -> None:
    named = set(re.findall(r"`([A-Z][A-Za-z]+Error)`", _text(path)))
    unknown = sorted(n for n in named if not hasattr(errors, n))
    assert not unknown, f"{path.name} names errors that do not exist: {unknown}"


def test_the_security_page_names_the_real_policy_rules() -> None:
    from policy.rules import POLICIES

    text = _text(DOCS / "security.md")
    for policy in POLICIES:
        assert f"`{policy.name}`" in text, policy.name


def test_troubleshooting_quotes_only_real_doctor_checks() -> None:

    from session_runtime.backends.kubernetes.diagnostics import cluster_diagnostics

    cluster = {d.name for d in cluster_diagnostics(load_settings(_env_file=None), api=None)}
    checks = {"settings", "backend", "local-stack", "default-session", "test-session", *cluster}
    text = _text(DOCS / "troubleshooting.md")
    quoted = set(re.findall(r"^(?:PASS|FAIL|SKIP)  (\S+)", text, flags=re.MULTILINE))
    assert {"settings", "default-session", "pod-template", "proxy"} <= quoted
    assert not sorted(quoted - checks)


def test_troubleshooting_quotes_the_doctor_line_for_each_classic_error() -> None:
    sections = re.split(r"^## ", _text(DOCS / "troubleshooting.md"), flags=re.MULTILINE)
    by_title = {s.splitlines()[0]: s for s in sections[1:]}
    for error in (errors.SessionsDisabledError(), errors.SessionJoinError()):
        assert re.search(rf"^FAIL .*{re.escape(error.message)}", by_title[error.message], re.M)
    connect = by_title[errors.SessionConnectError().message]
    assert re.search(r"^FAIL .*Failed to connect to session", connect, re.M)


def test_the_readme_configuration_reference_lists_every_setting() -> None:
    text = _text(ROOT / "README.md")
    reference = text[text.index("## Configuration reference") :]
    listed = set(re.findall(r"^\| `(WEBSOCKET_[A-Z_]+)` \|", reference, flags=re.MULTILINE))
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in WebSocketSettings.model_fields}
    assert listed == fields


def test_the_readme_quick_start_is_the_two_commands_ci_runs() -> None:
    text = _text(ROOT / "README.md")
    quick = text[text.index("## Quick start") :]
    block = quick[quick.index("```sh") : quick.index("```", quick.index("```sh") + 5)]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ["scripts/quickstart.sh", "scripts/test.sh"]
    assert "exec scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
