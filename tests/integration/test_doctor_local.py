"""`doctor` on the local backend checks the running stack, with the stack's own URLs."""

from __future__ import annotations

from pathlib import Path

from session_runtime.backends.local import LocalStack
from session_runtime.doctor import run_doctor
from session_runtime.settings import load_settings


def _line(report: object, name: str) -> tuple[bool | None, str, str | None]:
    (check,) = [c for c in report.checks if c.name == name]  # type: ignore[attr-defined]
    return check.ok, check.detail, check.hint


def test_doctor_on_a_running_local_stack_passes_with_its_proxy_url(
    local_stack: LocalStack,
) -> None:
    settings = load_settings(backend="local", local_state_dir=local_stack.state.root)
    report = run_doctor(settings)
    proxy_url = local_stack.proxy_url()
    assert proxy_url
    ok, detail, _ = _line(report, "settings")
    assert ok is True
    assert f"proxy={proxy_url}" in detail
    assert _line(report, "local-stack") == (True, f"running; proxy at {proxy_url}", None)
    assert _line(report, "default-session")[0] is True
    assert report.exit_code == 0


def test_doctor_without_a_local_stack_says_to_start_it(tmp_path: Path) -> None:
    settings = load_settings(backend="local", local_state_dir=tmp_path)
    report = run_doctor(settings)
    ok, detail, hint = _line(report, "local-stack")
    assert ok is False
    assert "The local stack is not running" in detail
    assert hint is not None and "gamgui-session local up" in hint
    assert report.exit_code == 1
