#!/usr/bin/env bash
# Creates the environments at the repo root (if missing) and installs the pinned dependencies into them;
# reuses an environment while its pins are unchanged.
#   .venv/          the backend (gvf4d package, CPU torch) — always
#   .venv-blender/  real Blender as a Python module (bpy) for the add-on's tests — with --test
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

# ensure_env VENV STAMP_INPUTS... -- PIP_ARGS...
ensure_env() {
  local venv="$1"; shift
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local stamp="$venv/.gvf4d-stamp-$(cat "${inputs[@]}" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv with $py"
    "$py" -m venv "$venv"
  fi
  echo "bootstrap: installing into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  rm -f "$venv"/.gvf4d-stamp-*
  touch "$stamp"
}

backend_reqs=(-r requirements/cpu.txt)
backend_inputs=(requirements/cpu.txt backend/pyproject.toml)
if [ $want_test = 1 ]; then
  backend_reqs+=(-r requirements/test.txt)
  backend_inputs+=(requirements/test.txt)
fi
ensure_env .venv "${backend_inputs[@]}" -- "${backend_reqs[@]}"
# the package itself, editable (cheap; keeps console scripts current)
if [ ! -f .venv/.gvf4d-editable ] || [ backend/pyproject.toml -nt .venv/.gvf4d-editable ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e backend
  touch .venv/.gvf4d-editable
fi
if [ $want_test = 1 ]; then
  ensure_env .venv-blender requirements/blender.txt -- -r requirements/blender.txt
fi
