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

# shellcheck source=lib/cli.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"

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
