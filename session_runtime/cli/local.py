"""``local up|down|status``: the local stack (nginx, dnsmasq, agents on loopback)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from session_runtime import naming
from session_runtime.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    ProgressPrinter,
    add_json_flag,
    emit_json,
)
from session_runtime.settings import ENV_PREFIX, load_settings

__all__ = ["register", "stack_env"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``local`` and its subcommands to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    local = subparsers.add_parser(
        "local", help="run the whole system on this machine (nginx, dnsmasq, agents)"
    )
    actions = local.add_subparsers(dest="local_action", metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _up, "start the local stack; returns once everything answers"),
        ("down", _down, "stop the local stack; leaves no process"),
        ("status", _status, "show what of the local stack is running"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--state-dir",
            type=Path,
            help="state directory (default: WEBSOCKET_LOCAL_STATE_DIR)",
        )
        add_json_flag(action)
        action.set_defaults(handler=handler)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir).expanduser().resolve()
    return Path(load_settings().local_state_dir).expanduser().resolve()


def stack_env(state_dir: Path, proxy_url: str) -> dict[str, str]:
    """Return the environment that points the runtime (server or CLI) at a local stack.

    Args:
        state_dir: the stack's state directory.
        proxy_url: the proxy's base URL, ``http://127.0.0.1:PORT``.
    """
    base = proxy_url.rstrip("/")
    ws_base = "ws://" + base.split("://", 1)[1]
    return {
        f"{ENV_PREFIX}BACKEND": "local",
        f"{ENV_PREFIX}LOCAL_STATE_DIR": str(state_dir),
        f"{ENV_PREFIX}PROXY_SERVICE_URL": base,
        f"{ENV_PREFIX}SESSION_CONNECTION_TEMPLATE": ws_base + naming.SESSION_PATH_TEMPLATE,
    }


def _up(args: argparse.Namespace) -> int:
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415

    state_dir = _state_dir(args)
    status = LocalStack(state_dir).up(
        connections_per_client=load_settings().proxy_connections_per_client,
        progress=ProgressPrinter(),
    )
    proxy_url = status.proxy_url
    if not status.running or proxy_url is None:
        sys.stderr.write(f"error: the local stack in {state_dir} did not come up\n")
        return EXIT_FAILURE
    env = stack_env(state_dir, proxy_url)
    if args.json:
        if not status.session_users:  # said plainly, where a script still reads clean JSON
            sys.stderr.write(f"note: {status.identity}\n")
        emit_json({"proxy_url": proxy_url, "env": env})
        return EXIT_OK
    print(f"local stack up: proxy at {proxy_url}")
    print(f"identity: {status.identity}")
    print("to point a server or another shell at it:")
    for name, value in env.items():
        print(f"  export {name}={value}")
    return EXIT_OK


def _down(args: argparse.Namespace) -> int:
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415

    state_dir = _state_dir(args)
    status = LocalStack(state_dir).down()
    if args.json:
        emit_json(status.model_dump(mode="json"))
    else:
        print("local stack down")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from session_runtime.backends.local import LocalStack  # noqa: PLC0415

    state_dir = _state_dir(args)
    status = LocalStack(state_dir).status()
    if args.json:
        emit_json(status.model_dump(mode="json"))
    else:
        print(f"local stack in {status.state_dir}: {'running' if status.running else 'down'}")
        if status.proxy_url:
            print(f"  proxy: {status.proxy_url}")
        if status.identity:
            print(f"  identity: {status.identity}")
        for process in status.processes:
            state = "alive" if process.alive else "exited"
            print(f"  {process.name:<24} pid {process.pid:<8} {process.address:<22} {state}")
    return EXIT_OK if status.running else EXIT_FAILURE
