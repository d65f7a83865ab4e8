#!/usr/bin/env bash
# Check one session end to end: it exists and is ready, the WebSocket handshake
# through the proxy succeeds, and a GAM command exits 0. A thin wrapper over
# `gamgui-session test-session`; the exit status is the check's verdict.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/test-websocket-session.sh --id ID [--command C] [--json]

Checks session ID: ready, handshake through the proxy, a command that exits 0.

  --id ID      session id (the Pulumi stack's always-available session is "default")
  --command C  the GAM command to run (default: version)
  --json       print the report as JSON on stdout
  -h, --help   show this help

Exit status: 0 the session works, 1 a step failed (the report says which), 2 usage error.
USAGE
}

die_usage() {
    echo "error: $*" >&2
    usage >&2
    exit 2
}

find_cli() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -n "${GAMGUI_SESSION:-}" ]; then
        echo "$GAMGUI_SESSION"
    elif [ -x "$root/.venv/bin/gamgui-session" ]; then
        echo "$root/.venv/bin/gamgui-session"
    elif command -v gamgui-session >/dev/null 2>&1; then
        command -v gamgui-session
    else
        echo "error: gamgui-session not found (run scripts/bootstrap.sh, or set GAMGUI_SESSION)" >&2
        exit 1
    fi
}

session_id=""
cli_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --id)
            [ "$#" -ge 2 ] || die_usage "--id needs a value"
            session_id=$2; shift 2 ;;
        --id=*) session_id=${1#--id=}; shift ;;
        --command)
            [ "$#" -ge 2 ] || die_usage "--command needs a value"
            cli_args+=(--command "$2"); shift 2 ;;
        --json) cli_args+=(--json); shift ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done
[ -n "$session_id" ] || die_usage "--id is required"

cli=$(find_cli)
exec "$cli" test-session --id="$session_id" "${cli_args[@]}"
