"""Optional CUDA C++ kernels, built on first use with NVRTC through PyTorch (`torch.cuda._compile_kernel`: no CUDA
toolkit or host compiler needed), for the places where a hand-written kernel beats our Triton ones."""
from __future__ import annotations

import functools
import logging
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)


@functools.cache
def cuda_kernel(source: str, name: str, device_index: int) -> Optional[Any]:
    """source: CUDA C++ (no includes) defining the extern "C" kernel `name` -> PyTorch's launcher for it, built for
    and loaded on the GPU `device_index` (launch it with that device current: launcher(grid=, block=,
    args=[tensors, ints, floats as double], shared_mem=) runs on the current stream, and CUDA graphs capture it), or
    None where it cannot be built (no CUDA, a PyTorch without NVRTC compilation)."""
    compile_kernel = getattr(torch.cuda, "_compile_kernel", None)
    if compile_kernel is None or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device_index)
    try:
        with torch.cuda.device(device_index):         # the module is loaded into the current device's context
            return compile_kernel(source, name, compute_capability=f"{major}{minor}")
    except Exception as error:  # noqa: BLE001 — NVRTC missing or refusing the architecture: the callers fall back
        log.warning("CUDA kernel %s not built, its Triton/PyTorch path runs instead: %s", name, error)
        return None


def reserve_shared_memory(kernel: Any, nbytes: int) -> None:
    """Let `kernel` launch with `nbytes` of dynamic shared memory (over 48 KiB needs the function's opt-in)."""
    if nbytes > getattr(kernel, "_max_shared_mem_bytes", 0):
        kernel.set_shared_memory_config(nbytes)
