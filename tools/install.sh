#!/usr/bin/env bash
# Installs the backend into .venv/ for this machine (Linux x86-64), then checks it with `gvf4d doctor`.
#   --cuda        the CUDA build of torch that fits the NVIDIA driver, gsplat, spconv's CUDA build when one fits
#   --cpu         the CPU stack (torch's CPU build and requirements/cpu.txt: what tools/bootstrap.sh installs)
#   --flash-attn  also flash-attn (CUDA only; on PyPI it is a source build that needs nvcc and can take an hour)
# Default: --cuda when nvidia-smi reports a driver that runs a CUDA build of torch, else --cpu.
# Which builds: backend/gvf4d/install_plan.py; which versions: requirements/cpu.txt and requirements/cuda.txt.
# Usage: bash tools/install.sh [--cuda|--cpu] [--flash-attn]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
plan_args=()
for arg in "$@"; do
  case "$arg" in
    --cuda|--cpu|--flash-attn) plan_args+=("$arg") ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install: unknown option $arg (expected --cuda, --cpu, --flash-attn)" >&2; exit 2 ;;
  esac
done
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "install: this script is for Linux x86-64; elsewhere use bash tools/bootstrap.sh (the CPU stack)" >&2
  exit 2
fi

# GVF4D_DEVICE, TORCH_SPEC, TORCH_INDEX_URL, TORCH_CUDA, CUDA_PACKAGES (exits 2 saying why when --cuda cannot be met)
plan="$(PYTHONPATH=backend "${GVF4D_PYTHON:-python3}" -m gvf4d.install_plan ${plan_args[@]+"${plan_args[@]}"})"
eval "$plan"
echo "install: $GVF4D_DEVICE stack, $TORCH_SPEC"

py=.venv/bin/python
pip_install() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
installed_torch() { "$py" -c 'import torch; print(torch.__version__.split("+")[0], torch.version.cuda or "")' 2>/dev/null || true; }
want="${TORCH_SPEC#torch==}"
want="${want%%+*} $TORCH_CUDA"

# The CPU stack and the package (tools/bootstrap.sh); where torch is still to come, pip takes its build for this
# machine from PyTorch's index.
if [ "$(installed_torch)" = "$want" ]; then
  bash tools/bootstrap.sh
else
  PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL${PIP_EXTRA_INDEX_URL:+ $PIP_EXTRA_INDEX_URL}" bash tools/bootstrap.sh
fi
# An environment made earlier keeps its torch: replace it when it is not the planned build.
have="$(installed_torch)"
if [ "$have" != "$want" ]; then
  echo "install: replacing torch ${have:-(none)} with $TORCH_SPEC"
  pip_install --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
fi

if [ "$GVF4D_DEVICE" = cuda ]; then
  read -r -a packages <<<"$CUDA_PACKAGES"
  plain=()
  flash=()
  for p in "${packages[@]}"; do
    case "$p" in flash-attn==*) flash+=("$p") ;; *) plain+=("$p") ;; esac
  done
  pip_install "${plain[@]}"
  command -v nvcc >/dev/null 2>&1 || echo "install: no nvcc on PATH: gsplat compiles its CUDA kernels on first use" \
    "with the CUDA toolkit (CUDA $TORCH_CUDA); until one is installed the PyTorch rasterizer runs" >&2
  if [ ${#flash[@]} -gt 0 ]; then
    echo "install: building ${flash[*]} (long)"
    pip_install --no-build-isolation "${flash[@]}"
  fi
  exec .venv/bin/gvf4d doctor --warm
fi
exec .venv/bin/gvf4d doctor
