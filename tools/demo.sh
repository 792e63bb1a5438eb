#!/usr/bin/env bash
# Installs into .venv/ and runs the main job on the embedded default (no GPU, no weights).
# Outputs land in outputs/demo/ (override: bash tools/demo.sh --out DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh"
cd "$root"
exec .venv/bin/gvf4d demo --out outputs/demo "$@"
