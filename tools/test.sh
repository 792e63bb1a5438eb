#!/usr/bin/env bash
# Installs into .venv/ and .venv-blender/ (with the test pins) and runs the whole test suite:
# the backend's tests, then the add-on's tests in real Blender (bpy).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh" --test
cd "$root"
status=0
.venv/bin/python -m pytest -q tests "$@" || status=$?
.venv-blender/bin/python -m pytest -q -p no:cacheprovider tests_blender || status=$?
exit $status
