"""Per-head RMS norm of half-precision queries/keys: x (..., H, D) -> x / rms(x over D) * gamma (H, D).

PyTorch's fused rms_norm runs one thread block per normalised row, which for rows of D = 32 or 64 channels (every
head of every token) leaves the GPU mostly idle. The Triton kernel here normalises whole tokens (all H heads) per
row of a 2-D tile, reads the query/key views in place (they are column slices of the fused qkv projection) and
writes a contiguous result. `multihead_rms_norm` picks it on CUDA where Triton is installed, outside torch.compile
(Inductor fuses the PyTorch form itself); `multihead_rms_norm_reference` is the PyTorch path (fused rms_norm,
float32 accumulation). The kernel's launch costs more CPU than PyTorch's two calls, which a CUDA graph hides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_kernels import triton_kernel, use_fused

EPS = 1e-24


def multihead_rms_norm_reference(x: Tensor, gamma: Tensor) -> Tensor:
    """x (..., H, D) half precision, gamma (H, D) -> (..., H, D)."""
    return F.rms_norm(x, (x.shape[-1],), eps=EPS) * gamma.to(x.dtype)


def multihead_rms_norm(x: Tensor, gamma: Tensor, fused: bool | None = None) -> Tensor:
    """x (..., H, D) half precision, gamma (H, D) -> (..., H, D). fused: None picks the Triton kernel where it
    runs (CUDA, Triton, power-of-two H and D, not inside torch.compile); True requires it; False: PyTorch."""
    H, D = x.shape[-2:]
    usable = (x.is_cuda and triton_kernel(_build_kernel) is not None and H & (H - 1) == 0 and D & (D - 1) == 0
              and D >= 16 and x.stride(-1) == 1 and x.stride(-2) == D)
    if not use_fused(fused, usable, "multi-head RMS norm needs CUDA, Triton, power-of-two H and D >= 16, and "
                     "contiguous heads", default=not torch.compiler.is_compiling()):
        return multihead_rms_norm_reference(x, gamma)
    triton, kernel = triton_kernel(_build_kernel)
    try:
        rows = x.view(-1, H * D)           # a column slice of a wider projection stays a view (row stride > H*D)
    except RuntimeError:
        rows = x.reshape(-1, H * D)
    out = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
    if rows.shape[0]:
        block = max(1, 4096 // (H * D))
        kernel[(triton.cdiv(rows.shape[0], block),)](rows, gamma.to(x.dtype), out, rows.shape[0], rows.stride(0), EPS,
                                                      H=H, D=D, BLOCK_ROWS=block, num_warps=4)
    return out.view(x.shape)


def _build_kernel(triton, tl):
    @triton.jit
    def multihead_rms_norm_kernel(X, G, O, R, stride_row, eps, H: tl.constexpr, D: tl.constexpr,
                                  BLOCK_ROWS: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        h = tl.arange(0, H)
        d = tl.arange(0, D)
        cols = h[:, None] * D + d[None, :]                                            # (H, D)
        ok = (rows < R)[:, None, None]
        x = tl.load(X + rows[:, None, None] * stride_row + cols[None], mask=ok, other=0.0).to(tl.float32)
        inv = tl.rsqrt(tl.sum(x * x, 2) / D + eps)                                    # (BLOCK_ROWS, H)
        y = x * inv[:, :, None] * tl.load(G + cols).to(tl.float32)[None]
        tl.store(O + rows[:, None, None] * (H * D) + cols[None], y.to(O.dtype.element_ty), mask=ok)

    return multihead_rms_norm_kernel
