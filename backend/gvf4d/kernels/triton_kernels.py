"""Optional Triton: the fused CUDA kernels are built on first use where Triton is installed, the one rule for
choosing between a fused kernel and its PyTorch path, whether a GPU takes TMA loads, and the base-2 scale the
attention kernels share."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

# The attention kernels take their exponentials in base 2 (the hardware's): scores are scaled by log2(e) up front.
LOG2_E = 1.4426950408889634


@functools.cache
def triton_kernel(build: Callable[[Any, Any], Any]) -> Optional[tuple[Any, Any]]:
    """build(triton, triton.language) -> a jitted kernel. Returns (triton, kernel), or None without Triton."""
    try:
        import triton
        import triton.language as tl
    except Exception:
        return None
    return triton, build(triton, tl)


def use_fused(requested: Optional[bool], usable: bool, needs: str, default: bool = True) -> bool:
    """requested None: the kernel where it is usable (and `default` allows it); True: the kernel, or a RuntimeError
    saying what it `needs`; False: the PyTorch path."""
    if requested is None:
        return usable and default
    if requested and not usable:
        raise RuntimeError(f"the fused {needs}")
    return requested


@functools.cache
def _host_tensor_descriptor() -> Optional[type]:
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    return TensorDescriptor


def host_tensor_descriptor(device: torch.device) -> Optional[type]:
    """Triton's host-side TMA descriptor class (triton.tools.tensor_descriptor.TensorDescriptor) where Triton has
    it and the GPU loads through TMA (sm_90+), else None."""
    descriptor = _host_tensor_descriptor()
    return descriptor if descriptor is not None and torch.cuda.get_device_capability(device)[0] >= 9 else None
