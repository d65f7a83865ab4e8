#!/usr/bin/env bash
# The README's first command: prepare this checkout, start the local stack
# (nginx, dnsmasq and the default session's agent on loopback) and run
# `gam version` in the default session through the proxy. Safe to run again.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/quickstart.sh [--help]

Runs scripts/bootstrap.sh, then `gamgui-session local up`, then
`gamgui-session send --id default -- version`. The local stack keeps running
afterwards; stop it with `gamgui-session local down`.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/bootstrap.sh
export PATH="$root/.venv/bin:$PATH"

echo "== starting the local stack" >&2
gamgui-session local up

echo "== running 'gam version' in the default session, through the proxy" >&2
gamgui-session send --id default -- version

cat <<'NEXT'

It works. Next (after `export PATH="$PWD/.venv/bin:$PATH"`):
  gamgui-session send --id default -- info domain    # any GAM command
  gamgui-session connect --id default                # an interactive GAM prompt
  gamgui-session create --id mine                    # a session of your own
  gamgui-session test-proxy                          # check the proxy end to end
  gamgui-session local down                          # stop everything
NEXT
