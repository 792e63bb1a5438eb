#!/usr/bin/env bash
# Installs into .venv/ (with the test pins) and runs the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh" --test
cd "$root"
exec .venv/bin/python -m pytest -q tests "$@"
