#!/usr/bin/env bash
# Creates the environments at the repo root (if missing) and installs the pinned dependencies into them;
# reuses an environment while its pins are unchanged.
#   .venv/              the backend (gvf4d package, CPU torch) — always
#   .venv-blender/      real Blender 5.0 as a Python module (bpy, Python 3.11) for the add-on's tests — with --test
#   .venv-blender-5.2/  Blender 5.2 LTS (bpy, Python 3.13) for the same — with --test, where a Python 3.13 is found
#                       (GVF4D_PYTHON313 names one; else python3.13 on PATH, else pyenv's 3.13)
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

# find_python313: prints a Python 3.13 for bpy 5.2 (only GVF4D_PYTHON313 when set); fails if none runs.
find_python313() {
  local cand cands=(python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13)
  [ -n "${GVF4D_PYTHON313:-}" ] && cands=("$GVF4D_PYTHON313")
  for cand in "${cands[@]}"; do
    if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

# ensure_env PYTHON VENV STAMP_INPUTS... -- PIP_ARGS...
ensure_env() {
  local python="$1" venv="$2"; shift 2
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local stamp="$venv/.gvf4d-stamp-$(cat "${inputs[@]}" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv with $python"
    "$python" -m venv "$venv"
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
ensure_env "$py" .venv "${backend_inputs[@]}" -- "${backend_reqs[@]}"
# the package itself, editable (cheap; keeps console scripts current)
if [ ! -f .venv/.gvf4d-editable ] || [ backend/pyproject.toml -nt .venv/.gvf4d-editable ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e backend
  touch .venv/.gvf4d-editable
fi
if [ $want_test = 1 ]; then
  ensure_env "$py" .venv-blender requirements/blender.txt -- -r requirements/blender.txt
  if py313="$(find_python313)"; then
    ensure_env "$py313" .venv-blender-5.2 requirements/blender-5.2.txt -- -r requirements/blender-5.2.txt
  elif [ -n "${GVF4D_PYTHON313:-}" ]; then
    echo "bootstrap: GVF4D_PYTHON313=$GVF4D_PYTHON313 is not a Python 3.13" >&2; exit 1
  else
    echo "bootstrap: no Python 3.13 found (GVF4D_PYTHON313 names one): .venv-blender-5.2 (Blender 5.2) not made"
  fi
fi
