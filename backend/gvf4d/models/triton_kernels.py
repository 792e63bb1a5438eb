"""Optional Triton: the fused CUDA kernels are built on first use where Triton is installed."""
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
