"""Smoke-check commands: ``test-session`` and ``test-proxy``; the exit code follows the report."""

from __future__ import annotations

import argparse

from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_default_session_id,
    add_json_flag,
    emit_json,
    make_manager,
)
from session_runtime.smoke import CheckReport, check_proxy, check_session

__all__ = ["format_report", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    session = subparsers.add_parser(
        "test-session",
        help="check a session: ready, handshake through the proxy, a command exits 0",
    )
    add_default_session_id(session)
    session.add_argument(
        "--command", default="version", help="the GAM command to run (default: version)"
    )
    add_json_flag(session)
    session.set_defaults(handler=_test_session)

    proxy = subparsers.add_parser(
        "test-proxy",
        help="check the proxy: health, clean 404s, the default session answers",
    )
    add_json_flag(proxy)
    proxy.set_defaults(handler=_test_proxy)


def format_report(report: CheckReport) -> str:
    """Return a report as text: one line per step, then the verdict.

    Args:
        report: the check's outcome.
    """
    lines = [f"{report.check} check of {report.target}"]
    for step in report.steps:
        mark = "ok  " if step.ok else "FAIL"
        lines.append(f"  {mark} {step.name:<24} {step.duration_ms:>6} ms  {step.detail}".rstrip())
    verdict = (
        "passed"
        if report.ok
        else f"FAILED at {report.first_failure.name}"
        if (report.first_failure)
        else "FAILED"
    )
    lines.append(f"{report.check} check {verdict} in {report.duration_ms} ms")
    return "\n".join(lines)


def _show(report: CheckReport, as_json: bool) -> int:
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILURE


def _test_session(args: argparse.Namespace) -> int:
    manager = make_manager()
    report = check_session(manager.settings, args.session_id, args.command, manager=manager)
    return _show(report, args.json)


def _test_proxy(args: argparse.Namespace) -> int:
    manager = make_manager()
    return _show(check_proxy(manager.settings, manager=manager), args.json)
