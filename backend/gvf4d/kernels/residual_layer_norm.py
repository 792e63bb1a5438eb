"""A residual update and the layer norm that follows it, in one pass over the tokens (half precision):

    x' = x + delta * gate                    (x + delta without a gate; no update without a delta)
    h  = layer_norm(x') * weight + bias      (weight, bias: adaLN's per-sample 1 + scale and shift, or the norm's own)

x, delta (B, T, N, C) with contiguous channels and any token strides (the DiT's temporal branch reads and writes
frame-transposed views); gate (B, C); weight, bias (B, C) per sample, (C,) shared, or None (no affine). Returns x'
(contiguous) and h, written into `out` (any strides over (B, T, N, C)) when given.

In the GVF DiT every attention's residual is followed by the next layer norm. PyTorch runs them as element-wise
kernels (not vectorised where a per-sample gate is broadcast over tokens or the update comes frame-transposed) and a
layer-norm kernel that uses little of the memory bandwidth on 512-channel rows; the Triton kernel reads x and delta
once and writes x' and h once. `residual_layer_norm_reference` is the PyTorch path. `add_norm` is what the models
call: the published operations in float32, the fused pass in half precision.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .triton_kernels import triton_kernel, use_fused


def add_norm(x: Tensor, delta: Optional[Tensor], gate: Optional[Tensor], norm: nn.LayerNorm,
             shift: Optional[Tensor] = None, weight: Optional[Tensor] = None,
             out: Optional[Tensor] = None, x_out: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """A residual update and the next norm: x' = x + delta * gate (x + delta without a gate; x without a delta),
    then norm(x'), adaLN-modulated as norm(x') * weight + shift (weight: adaLN's 1 + scale; both (B, C)) or with
    the norm's own affine (if any). x, delta (B, T, N, C) -> (x', h); h is written into out (a strided (B, T, N, C)
    view) and, with a delta, x' into x_out (a contiguous one) when given. Float32: the published operations, bit
    for bit; half precision: residual_layer_norm (one fused pass on CUDA)."""
    if x.dtype == torch.float32:
        if delta is not None:
            x = x + delta if gate is None else x + delta * gate[:, None, None]
            x = x if x_out is None else x_out.copy_(x)
        h = norm(x) if weight is None else norm(x) * weight[:, None, None] + shift[:, None, None]
        return x, (h if out is None else out.copy_(h))
    weight, bias = (norm.weight, norm.bias) if weight is None else (weight, shift)
    return residual_layer_norm(x, delta, gate, weight, bias, norm.eps, out, x_out=x_out)


def residual_layer_norm_reference(x: Tensor, delta: Optional[Tensor], gate: Optional[Tensor],
                                  weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                                  out: Optional[Tensor] = None, x_out: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """PyTorch path, same arguments as residual_layer_norm. One sample's modulation is the norm's affine transform
    (one kernel, one rounding)."""
    if delta is not None:
        x = x + delta if gate is None else torch.addcmul(x, delta, gate[:, None, None])
        x = x if x_out is None else x_out.copy_(x)
    C = x.shape[-1]
    if weight is None:
        h = F.layer_norm(x, (C,), eps=eps)
    elif weight.ndim == 1 or x.shape[0] == 1:
        h = F.layer_norm(x, (C,), weight.reshape(-1, C)[0], bias.reshape(-1, C)[0], eps)
    else:
        h = F.layer_norm(x, (C,), eps=eps) * weight[:, None, None] + bias[:, None, None]
    return x, (h if out is None else out.copy_(h))


def residual_layer_norm(x: Tensor, delta: Optional[Tensor], gate: Optional[Tensor], weight: Optional[Tensor],
                        bias: Optional[Tensor], eps: float, out: Optional[Tensor] = None,
                        fused: Optional[bool] = None, x_out: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """x, delta (B, T, N, C), gate (B, C) or None, weight/bias (B, C), (C,) or None -> (x' (B, T, N, C),
    h (B, T, N, C)); with a delta, x' is written into x_out (contiguous) when given.
    fused: None picks the Triton kernel where it runs (CUDA, half precision, Triton, contiguous channels, not inside
    torch.compile, which fuses the PyTorch form itself); True requires it; False: PyTorch."""
    B, T, N, C = x.shape
    if x_out is not None and not x_out.is_contiguous():
        raise ValueError("residual_layer_norm: x_out must be contiguous")
    tensors = [t for t in (x, delta, gate, weight, bias, out, x_out) if t is not None]
    usable = (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and all(t.dtype == x.dtype for t in tensors)
              and all(t.stride(-1) == 1 for t in tensors) and triton_kernel(_build_kernel) is not None)
    if not use_fused(fused, usable, "residual layer norm needs CUDA, Triton and half-precision tensors of one dtype "
                     "with contiguous channels", default=not torch.compiler.is_compiling()):
        return residual_layer_norm_reference(x, delta, gate, weight, bias, eps, out, x_out)
    triton, kernel = triton_kernel(_build_kernel)
    if delta is None:
        updated = x
    else:
        updated = torch.empty(B, T, N, C, device=x.device, dtype=x.dtype) if x_out is None else x_out
    h = torch.empty(B, T, N, C, device=x.device, dtype=x.dtype) if out is None else out
    rows = B * T * N
    if rows:
        width = triton.next_power_of_2(C)
        # about 1,024 elements a program (the result does not depend on it)
        block = max(1, 1024 // width)
        d = delta if delta is not None else x
        sample_stride = lambda t: t.stride(0) if t.ndim == 2 else 0      # noqa: E731  (shared weights: 0)
        kernel[(triton.cdiv(rows, block),)](
            x, d, x if gate is None else gate, x if weight is None else weight, x if bias is None else bias,
            updated, h, rows, T, N, C, eps, *x.stride()[:3], *d.stride()[:3], 0 if gate is None else gate.stride(0),
            0 if weight is None else sample_stride(weight), 0 if bias is None else sample_stride(bias),
            *h.stride()[:3], HAS_DELTA=delta is not None, HAS_GATE=gate is not None, AFFINE=weight is not None,
            BLOCK_ROWS=block, BLOCK_C=width, num_warps=4)
    return updated, h


def _build_kernel(triton, tl):
    @triton.jit
    def residual_layer_norm_kernel(X, D, G, W, Bias, XO, HO, R, T, N, C, eps,
               sxb, sxt, sxn, sdb, sdt, sdn, sgb, swb, sbb, shb, sht, shn,
               HAS_DELTA: tl.constexpr, HAS_GATE: tl.constexpr, AFFINE: tl.constexpr, BLOCK_ROWS: tl.constexpr,
               BLOCK_C: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_C)
        ok = (rows < R)[:, None] & (cols < C)[None, :]
        b, t, n = rows // (T * N), (rows // N) % T, rows % N
        x = tl.load(X + (b * sxb + t * sxt + n * sxn)[:, None] + cols[None, :], mask=ok, other=0.0)
        if HAS_DELTA:
            d = tl.load(D + (b * sdb + t * sdt + n * sdn)[:, None] + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            if HAS_GATE:
                d = d * tl.load(G + b[:, None] * sgb + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            x = (x.to(tl.float32) + d).to(XO.dtype.element_ty)        # the stored x' is what the norm sees
            tl.store(XO + rows[:, None] * C + cols[None, :], x, mask=ok)
        x = x.to(tl.float32)
        mean = tl.sum(x, 1) / C
        centred = tl.where(ok, x - mean[:, None], 0.0)
        inv = tl.rsqrt(tl.sum(centred * centred, 1) / C + eps)
        h = centred * inv[:, None]
        if AFFINE:
            w = tl.load(W + b[:, None] * swb + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            h = h * w + tl.load(Bias + b[:, None] * sbb + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        tl.store(HO + (b * shb + t * sht + n * shn)[:, None] + cols[None, :], h.to(HO.dtype.element_ty), mask=ok)

    return residual_layer_norm_kernel
