#!/usr/bin/env bash
# Creates .venv/ at the repo root (if missing) and installs the pinned dependencies
# and the gvf4d package into it. Reuses the environment when the pins are unchanged.
# Usage: bash tools/bootstrap.sh [--test]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

py="${GVF4D_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
[ -n "$py" ] || { echo "bootstrap: no python3 found (Python 3.11 is required)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi

reqs=(requirements/cpu.txt)
[ $want_test = 1 ] && reqs+=(requirements/test.txt)
stamp=".venv/.gvf4d-stamp-$(cat "${reqs[@]}" backend/pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing ${reqs[*]} into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/python -m pip install -q --disable-pip-version-check "${args[@]}"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e backend
  # a test stamp also satisfies a plain run; a plain stamp does not satisfy tests
  touch "$stamp"
fi
