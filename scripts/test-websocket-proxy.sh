#!/usr/bin/env bash
# Check the WebSocket proxy: it is healthy, answers a bad path and an unknown
# session with clean errors, and reaches the default session. A thin wrapper
# over `gamgui-session test-proxy`; the exit status is the check's verdict.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/test-websocket-proxy.sh [--json]

Checks the proxy named by WEBSOCKET_PROXY_SERVICE_URL: health, clean 404s,
and the default session answering through it.

  --json      print the report as JSON on stdout
  -h, --help  show this help

Exit status: 0 the proxy works, 1 a step failed (the report says which), 2 usage error.
USAGE
}

# shellcheck source=lib/cli.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"

cli_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --json) cli_args+=(--json); shift ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

cli=$(find_cli)
exec "$cli" test-proxy "${cli_args[@]}"
