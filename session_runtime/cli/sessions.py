"""Session lifecycle commands: ``create``, ``close``, ``list``, ``reap``."""

from __future__ import annotations

import argparse
import sys

from session_runtime.audit import stream_audit_lines
from session_runtime.cli import jsonlines
from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    ProgressPrinter,
    add_json_flag,
    emit_json,
    make_manager,
    session_id_arg,
)
from session_runtime.models import SessionInfo

__all__ = ["format_session_table", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    create = subparsers.add_parser(
        "create",
        help="create a session (or return the existing one) and wait until it answers",
        description="Create a session and wait until it answers through the proxy. "
        "The token is printed only with --show-token.",
    )
    create.add_argument(
        "--id", dest="session_id", type=session_id_arg, help="the session id (default: generated)"
    )
    create.add_argument("--command", help="a GAM command the session runs first")
    create.add_argument("--credentials-secret", help="Secret with the GAM credentials")
    create.add_argument(
        "--no-wait", action="store_true", help="return once the backend accepted the session"
    )
    create.add_argument(
        "--show-token", action="store_true", help="include the session's token in the output"
    )
    add_json_flag(create)
    jsonlines.add_json_lines_flag(create)
    create.set_defaults(handler=_create)

    close = subparsers.add_parser("close", help="close a session and remove all it owns")
    close.add_argument(
        "--id", dest="session_id", type=session_id_arg, required=True, help="the session id"
    )
    add_json_flag(close)
    close.set_defaults(handler=_close)

    listing = subparsers.add_parser("list", help="list sessions, oldest first")
    add_json_flag(listing)
    listing.set_defaults(handler=_list)

    reap = subparsers.add_parser(
        "reap", help="remove finished, expired, idle and orphaned sessions"
    )
    reap.add_argument("--dry-run", action="store_true", help="report only, remove nothing")
    add_json_flag(reap)
    reap.set_defaults(handler=_reap)


def _create(args: argparse.Namespace) -> int:
    manager = make_manager()
    if args.json_lines:
        return jsonlines.create(args, manager)
    info = manager.create_session(
        args.session_id,
        command=args.command,
        credentials_secret=args.credentials_secret,
        wait=not args.no_wait,
        progress=ProgressPrinter(),
    )
    if args.json:
        emit_json(info.public_dict(include_token=args.show_token))
        return EXIT_OK
    print(f"session {info.session_id} {info.status.value}")
    print(f"  url:     {info.websocket_url}")
    print(f"  path:    {info.websocket_path}")
    print(f"  created: {info.created_at.isoformat()}")
    if args.show_token:
        print(f"  token:   {info.token.get_secret_value()}")
    else:
        print("  token:   hidden (--show-token prints it)")
    return EXIT_OK


def _close(args: argparse.Namespace) -> int:
    removed = make_manager().close_session(args.session_id)
    if args.json:
        emit_json({"session_id": args.session_id, "closed": removed})
    elif removed:
        print(f"closed session {args.session_id}")
    else:
        sys.stderr.write(f"error: no session {args.session_id!r} to close\n")
    return EXIT_OK if removed else EXIT_FAILURE


def format_session_table(sessions: list[SessionInfo]) -> str:
    """Return sessions as an aligned text table (no tokens).

    Args:
        sessions: what to show, in order.
    """
    rows = [("ID", "STATUS", "CREATED", "URL")]
    rows += [
        (
            s.session_id,
            s.status.value,
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.websocket_url,
        )
        for s in sessions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _list(args: argparse.Namespace) -> int:
    sessions = make_manager().list_sessions()
    if args.json:
        emit_json([s.public_dict() for s in sessions])
    elif sessions:
        print(format_session_table(sessions))
    else:
        print("no sessions")
    return EXIT_OK


def _reap(args: argparse.Namespace) -> int:
    with stream_audit_lines(sys.stderr):  # the reaper CronJob's log shows every reap
        reaped = make_manager().reap(dry_run=args.dry_run)
    if args.json:
        emit_json([r.model_dump(mode="json") for r in reaped])
        return EXIT_OK
    if not reaped:
        print("nothing to reap")
    for r in reaped:
        verb = "removed" if r.removed else "would remove"
        code = r.reason_code.value
        why = r.reason if r.reason.startswith(code) else f"{code}: {r.reason}"
        if r.idle_since is not None:
            stamp = f"{r.idle_since:%Y-%m-%dT%H:%M:%SZ}"
            why += "" if stamp in why else f" (idle since {stamp})"
        print(f"{verb} {r.session_id}: {why}")
    return EXIT_OK
