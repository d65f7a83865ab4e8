#!/usr/bin/env bash
# Create a GAM session (or return the existing one with that id) and wait until
# it answers through the proxy. A thin wrapper over `gamgui-session create`:
# configuration comes from the WEBSOCKET_* variables (or .env), as for the server.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/create-websocket-session.sh --id ID [--command C] [--credentials SECRET]
                                          [--no-wait] [--json]

Creates session ID and waits until it answers through the proxy.

  --id ID               session id: one DNS label (a-z, 0-9, '-'; 1-63 characters)
  --command C           a GAM command the session runs first
  --credentials SECRET  the Secret with the GAM credentials (default: the stack's)
  --no-wait             return once the backend has accepted the session
  --json                print the session as JSON on stdout (no token)
  -h, --help            show this help

Exit status: 0 created (or already there), 1 failed, 2 usage error.
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
        --credentials)
            [ "$#" -ge 2 ] || die_usage "--credentials needs a value"
            cli_args+=(--credentials-secret "$2"); shift 2 ;;
        --no-wait) cli_args+=(--no-wait); shift ;;
        --json) cli_args+=(--json); shift ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done
[ -n "$session_id" ] || die_usage "--id is required"

cli=$(find_cli)
# The CLI checks the id (a bad one exits 2) and every other value.
exec "$cli" create --id="$session_id" "${cli_args[@]}"
