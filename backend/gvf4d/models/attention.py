"""Scaled dot-product attention over (B, L, H, D) tensors: on CUDA our Triton kernel for narrow heads, SDPA's
memory-efficient kernel for other heads over short key sequences, flash-attn when installed and usable, else
SDPA's choice."""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..kernels.multihead_rms_norm import multihead_rms_norm
from ..kernels.small_head_attention import small_head_attention, small_head_attention_usable


@functools.cache
def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
    except Exception:
        return None
    return flash_attn_func


def flash_attn_usable(q: Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256 and _flash_attn_func() is not None


# On CUDA, key sequences this short (the DiT's temporal attention over 32 frames) run faster on SDPA's
# memory-efficient kernel than on cuDNN's or flash; narrow heads outside torch.compile take our kernel.
SHORT_KEYS = 64


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "auto", q_norm: Optional[MultiHeadRMSNorm] = None,
              k_norm: Optional[MultiHeadRMSNorm] = None) -> Tensor:
    """q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H, D); softmax scale 1/sqrt(D). backend: auto, small_heads
    (kernels/small_head_attention.py), flash (flash-attn), sdpa (PyTorch's choice), efficient (SDPA's
    memory-efficient kernel). q_norm / k_norm: per-head RMS norms applied to q / k first (the narrow-head kernel
    applies them as it loads the tiles)."""
    if backend == "auto" and q.is_cuda:
        if small_head_attention_usable(q, k, v) and not torch.compiler.is_compiling():
            backend = "small_heads"
        elif k.shape[1] <= SHORT_KEYS:
            backend = "efficient"
    if backend == "small_heads":
        gain = lambda norm: None if norm is None else norm.gamma       # noqa: E731
        return small_head_attention(q, k, v, gain(q_norm), gain(k_norm), fused=True)
    q, k = (q if q_norm is None else q_norm(q)), (k if k_norm is None else k_norm(k))
    if backend == "flash" or (backend == "auto" and flash_attn_usable(q)):
        return _flash_attn_func()(q, k, v)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend == "efficient":
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)
    return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)


class MultiHeadRMSNorm(nn.Module):
    """RMS norm over each head's channels with a learned per-head gain: (..., H, D) -> (..., H, D).

    Published as normalize(x) * gamma * sqrt(D) in float32 (our float32 path, kept bit-faithful: the adaptive
    sampler's step control is sensitive to the last bit). That is x / rms(x) * gamma, which for half-precision
    inputs one fused pass computes, accumulating in float32 (kernels/multihead_rms_norm.py)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return multihead_rms_norm(x, self.gamma)
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)
