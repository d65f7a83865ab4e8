"""``console --id X``: the URL of the browser console for a session (or open it).

The local stack's proxy serves the page at ``/console/``; the URL carries the
session id and its token in the fragment, which the browser keeps to itself.
Printing the URL prints the token: that is what this command is asked for.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path

from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_default_session_id,
    add_json_flag,
    emit_json,
    make_manager,
)
from session_runtime.console import (
    CONSOLE_PATH,
    console_dir_for,
    console_url,
    missing_vendor_files,
)
from session_runtime.errors import BackendUnavailableError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``console`` to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    console = subparsers.add_parser(
        "console",
        help="print (or open) the browser console URL of a session (local stack)",
        description="Print the URL of the local stack's GAM console for a session. The "
        "session id and token ride in the URL fragment, which browsers never send to a "
        "server; treat the URL like the token.",
    )
    add_default_session_id(console)
    console.add_argument(
        "--open", action="store_true", help="open the URL in a web browser instead of printing it"
    )
    add_json_flag(console)
    console.set_defaults(handler=_console)


def _console(args: argparse.Namespace) -> int:
    manager = make_manager()
    settings = manager.settings
    if settings.backend != "local":
        raise BackendUnavailableError(
            "The console page is served by the local stack only",
            cause=f"the backend is {settings.backend!r}",
            hint="set WEBSOCKET_BACKEND=local and run `gamgui-session local up`",
        )
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415 - local only

    stack = LocalStack(Path(settings.local_state_dir))
    stack.require_running()
    proxy_url = stack.proxy_url()
    if proxy_url is None:  # pragma: no cover - require_running has just seen it alive
        raise BackendUnavailableError("The local stack's proxy is not running")
    session = manager.get_session(args.session_id)
    url = console_url(proxy_url, session.session_id, session.token.get_secret_value())
    missing = missing_vendor_files(console_dir_for(stack.state.root))
    if missing:
        sys.stderr.write(
            f"warning: the console lacks {', '.join(missing)}: run scripts/bootstrap.sh, "
            "then `gamgui-session local down` and `local up`\n"
        )
    if args.open:
        if not webbrowser.open(url):
            sys.stderr.write(
                f"error: no web browser to open; the page is {proxy_url}{CONSOLE_PATH} "
                "(without --open the full URL is printed)\n"
            )
            return EXIT_FAILURE
        print(f"opened the console of session {session.session_id} in a web browser")
        return EXIT_OK
    if args.json:
        emit_json({"session_id": session.session_id, "url": url})
    else:
        print(url)
    return EXIT_OK
