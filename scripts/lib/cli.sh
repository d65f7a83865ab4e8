# Shared by the classic session scripts (sourced, not run): usage errors and
# finding the gamgui-session CLI. The sourcing script defines usage().
# shellcheck shell=bash

# Print an error and the usage, and exit 2 (a usage error).
die_usage() {
    echo "error: $*" >&2
    usage >&2
    exit 2
}

# Print the gamgui-session to run: $GAMGUI_SESSION, this checkout's .venv, or PATH.
find_cli() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
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
