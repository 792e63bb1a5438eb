"""Attention and MLP layers shared by the GVF DiT and the TRELLIS models (same parameter names as published).

The layers work on any leading shape: dense tokens (B, L, C) or the rows of a sparse tensor (N, C). How
queries meet keys is the caller's `attend(q, k, v)` over (..., L, H, D) tensors: plain batched attention by
default, or a segmented/windowed one for sparse tokens (models/sparse/attention.py).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadRMSNorm, attention

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


def _add_qk_norms(module: nn.Module, channels: int, heads: int, enabled: bool) -> None:
    """q_rms_norm / k_rms_norm (per-head RMS norms of queries and keys) when enabled, as the published layers name them."""
    module.qk_rms_norm = enabled
    if enabled:
        module.q_rms_norm = MultiHeadRMSNorm(channels // heads, heads)
        module.k_rms_norm = MultiHeadRMSNorm(channels // heads, heads)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int, qk_rms_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(channels, 3 * channels)
        _add_qk_norms(self, channels, heads, qk_rms_norm)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, attend: Optional[Attend] = None) -> Tensor:
        """x (..., L, C) -> (..., L, C). attend None: dense attention, which applies the q/k norms itself (inside
        its kernel where it can)."""
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(-3)
        if attend is None:
            norms = (self.q_rms_norm, self.k_rms_norm) if self.qk_rms_norm else (None, None)
            return self.to_out(attention(q, k, v, q_norm=norms[0], k_norm=norms[1]).flatten(-2))
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return self.to_out(attend(q, k, v).flatten(-2))


class CrossAttention(nn.Module):
    def __init__(self, channels: int, ctx_channels: int, heads: int, qk_rms_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(ctx_channels, 2 * channels)
        _add_qk_norms(self, channels, heads, qk_rms_norm)
        self.to_out = nn.Linear(channels, channels)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context (..., Lc, C_ctx) -> k, v (..., Lc, H, D): compute once, reuse for every query set."""
        return keys_values_of([self], context)[0]

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], attend: Optional[Attend] = None) -> Tensor:
        """x (..., L, C), kv from keys_values -> (..., L, C). attend None: dense attention, which applies the query
        norm itself (the keys are normalised in keys_values)."""
        q = self.to_q(x).unflatten(-1, (self.heads, -1))
        if attend is None:
            return self.to_out(attention(q, *kv, q_norm=self.q_rms_norm if self.qk_rms_norm else None).flatten(-2))
        if self.qk_rms_norm:
            q = self.q_rms_norm(q)
        return self.to_out(attend(q, *kv).flatten(-2))


def keys_values_of(attns: Sequence[CrossAttention], context: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Several layers' keys/values of one context, with one matrix product for all of them: context (..., Lc, C_ctx)
    -> per layer k, v (..., Lc, H, D) (strided views of one tensor; keys normalised where the layer says so)."""
    first = attns[0]
    if len(attns) == 1:
        kv = first.to_kv(context)
    else:
        kv = F.linear(context, torch.cat([a.to_kv.weight for a in attns]), torch.cat([a.to_kv.bias for a in attns]))
    pairs = [layer.unbind(-3) for layer in kv.unflatten(-1, (len(attns), 2, first.heads, -1)).unbind(-4)]
    return [(a.k_rms_norm(k) if a.qk_rms_norm else k, v) for a, (k, v) in zip(attns, pairs)]


class FeedForward(nn.Module):
    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., C) -> (..., C). Half precision on CUDA: the GELU runs in the first product's epilogue (cuBLASLt,
        the same tanh form; aten's `_addmm_activation`, which Inductor also emits): one pass fewer over the hidden
        activations."""
        first, _, second = self.mlp
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and first.weight.dtype == x.dtype:
            hidden = torch._addmm_activation(first.bias, x.reshape(-1, x.shape[-1]), first.weight.t(), use_gelu=True)
            return second(hidden.reshape(*x.shape[:-1], -1))
        return self.mlp(x)
