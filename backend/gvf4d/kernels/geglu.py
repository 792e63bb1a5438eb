"""GEGLU: x (..., 2F) -> x[..., :F] * gelu(x[..., F:]) (exact, erf-based GELU), as the motion VAE's MLPs use it.

The two halves are column slices of one projection, and PyTorch's element-wise kernels do not vectorise such
strided views. On CUDA with Triton one kernel reads both halves in place and writes the product; `geglu_reference`
is the PyTorch path.

`linear_geglu` is the projection and the GEGLU in one Triton kernel (sm_90+, TMA loads): each program multiplies
its input tile with the value rows and the gate rows of the weight and writes only the product, so the (..., 2F)
projection is never stored (nor rounded to half precision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_kernels import host_tensor_descriptor, triton_kernel, use_fused


def geglu_reference(x: Tensor) -> Tensor:
    value, gates = x.chunk(2, dim=-1)
    return value * F.gelu(gates)


def geglu(x: Tensor, fused: bool | None = None) -> Tensor:
    """x (..., 2F) -> (..., F) in x's dtype. fused: None picks the Triton kernel where it runs (CUDA, half
    precision, Triton, contiguous rows, not inside torch.compile); True requires it; False: PyTorch."""
    usable = (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and x.is_contiguous()
              and triton_kernel(_build_kernel) is not None)
    if not use_fused(fused, usable, "GEGLU needs a contiguous half-precision CUDA tensor and Triton",
                     default=not torch.compiler.is_compiling()):
        return geglu_reference(x)
    triton, kernel = triton_kernel(_build_kernel)
    width = x.shape[-1] // 2
    rows = x.reshape(-1, 2 * width)
    out = torch.empty(rows.shape[0], width, device=x.device, dtype=x.dtype)
    if rows.shape[0]:
        block = 1024
        kernel[(rows.shape[0], triton.cdiv(width, block))](rows, out, width, BLOCK=block, num_warps=4)
    return out.reshape(*x.shape[:-1], width)


# 128 x 128 output tiles (two 128 x 128 accumulators: value and gate), 64 deep, 8 warps, 3 stages: tuned for the
# motion-VAE decoder's MLP (768 -> 2 x 3,072)
LINEAR_TILES = {"BM": 128, "BN": 128, "BK": 64, "num_warps": 8, "num_stages": 3}


def linear_geglu_usable(x: Tensor, weight: Tensor, bias: Tensor) -> bool:
    """Whether the fused kernel runs: CUDA sm_90+, Triton with host TMA descriptors, x / weight / bias of matching
    shapes in one half precision with contiguous rows 16-byte aligned, F a multiple of the tile width."""
    if not (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and weight.dtype == bias.dtype == x.dtype
            and x.stride(-1) == 1 and weight.is_contiguous() and bias.is_contiguous() and weight.data_ptr() % 16 == 0
            and weight.shape[1] == x.shape[-1] and bias.shape == weight.shape[:1]
            and weight.shape[0] % (2 * LINEAR_TILES["BN"]) == 0 and x.shape[-1] * x.element_size() % 16 == 0
            and triton_kernel(_build_linear_kernel) is not None):
        return False
    return host_tensor_descriptor(x.device) is not None


def linear_geglu(x: Tensor, weight: Tensor, bias: Tensor, fused: bool | None = None) -> Tensor:
    """x (..., K), weight (2F, K), bias (2F,) -> geglu(x @ weight.T + bias) (..., F) in x's dtype. fused: None picks
    the Triton kernel where it runs (see `linear_geglu_usable`; not inside torch.compile); True requires it; False:
    the product, then `geglu`."""
    if not use_fused(fused, linear_geglu_usable(x, weight, bias), "GEGLU projection needs CUDA sm_90+, Triton with "
                     "TMA descriptors, one half precision, contiguous rows and F a multiple of 128",
                     default=not torch.compiler.is_compiling()):
        return geglu(F.linear(x, weight, bias))
    descriptor = host_tensor_descriptor(x.device)
    triton, kernel = triton_kernel(_build_linear_kernel)
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(0) * rows.element_size() % 16 or rows.data_ptr() % 16:     # TMA wants 16-byte aligned rows
        rows = rows.clone(memory_format=torch.contiguous_format)
    width = weight.shape[0] // 2
    out = torch.empty(rows.shape[0], width, device=x.device, dtype=x.dtype)
    if rows.shape[0]:
        tiles = dict(LINEAR_TILES)
        bm, bn, bk = tiles.pop("BM"), tiles.pop("BN"), tiles.pop("BK")
        x_desc = descriptor(rows, shape=list(rows.shape), strides=list(rows.stride()), block_shape=[bm, bk])
        w_desc = descriptor(weight, shape=list(weight.shape), strides=list(weight.stride()), block_shape=[bn, bk])
        grid = (triton.cdiv(rows.shape[0], bm) * (width // bn),)
        kernel[grid](x_desc, w_desc, bias, out, rows.shape[0], width, rows.shape[1], BM=bm, BN=bn, BK=bk, **tiles)
    return out.reshape(*x.shape[:-1], width)


def _build_linear_kernel(triton, tl):
    @triton.jit
    def linear_geglu_kernel(X, W, Bias, O, M, F_, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """One program: a BM x BN tile of the output from the rows' tile and the weight's value rows (n) and gate
        rows (F + n), grouped 8 row tiles at a time along the columns so neighbouring programs share weight tiles
        in L2. X, W: TMA descriptors (rows past M and columns past K read as zeros)."""
        pid = tl.program_id(0)
        row_tiles, col_tiles = tl.cdiv(M, BM), F_ // BN
        group = pid // (8 * col_tiles)
        first = group * 8
        size = min(row_tiles - first, 8)
        pid_m = first + (pid % (8 * col_tiles)) % size
        pid_n = (pid % (8 * col_tiles)) // size
        value = tl.zeros([BM, BN], dtype=tl.float32)
        gate = tl.zeros([BM, BN], dtype=tl.float32)
        for k in range(0, K, BK):
            a = X.load([pid_m * BM, k])
            value = tl.dot(a, W.load([pid_n * BN, k]).T, value)
            gate = tl.dot(a, W.load([F_ + pid_n * BN, k]).T, gate)
        cols = pid_n * BN + tl.arange(0, BN)
        value += tl.load(Bias + cols).to(tl.float32)[None, :]
        gate += tl.load(Bias + F_ + cols).to(tl.float32)[None, :]
        out = value * (0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476)))
        rows = pid_m * BM + tl.arange(0, BM)
        tl.store(O + rows[:, None].to(tl.int64) * F_ + cols[None, :], out.to(O.dtype.element_ty), mask=rows[:, None] < M)

    return linear_geglu_kernel


def _build_kernel(triton, tl):
    @triton.jit
    def geglu_kernel(X, O, F_, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < F_
        value = tl.load(X + row * 2 * F_ + cols, mask=ok, other=0.0).to(tl.float32)
        gate = tl.load(X + row * 2 * F_ + F_ + cols, mask=ok, other=0.0).to(tl.float32)
        gelu = 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476))
        tl.store(O + row * F_ + cols, (value * gelu).to(O.dtype.element_ty), mask=ok)

    return geglu_kernel
