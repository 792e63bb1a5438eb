"""Optional Triton: the fused CUDA kernels are built on first use where Triton is installed, and the one rule
for choosing between a fused kernel and its PyTorch path."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional


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
