#!/usr/bin/env bash
# The project's test command: installs what it needs (scripts/bootstrap.sh, at
# the versions pinned in constraints.txt), then runs the linters, the type
# checker and the whole test suite. Exits
# non-zero on any failure. Extra arguments go to pytest.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/bootstrap.sh

export PATH="$root/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== pytest" >&2
exec pytest "$@"
