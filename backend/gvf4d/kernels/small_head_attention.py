"""Multi-head softmax attention for narrow heads (16 or 32 channels), over (B, L, H, D) tensors:

    out[b, i, h] = softmax_j(q[b, i, h] . k[b, j, h] / sqrt(D)) @ v[b, j, h]

The GVF DiT's attentions have 16 heads of 32 channels, which SDPA's kernels run slowly and return as (B, H, L, D)
outputs that the output projection copies back to tokens. The Triton kernel here (online softmax, one program per
query tile and (sample, head), only a last partial key tile masked, tiles by key count: `_tiles`) reads the
query/key/value views of the projections in place and writes (B, L, H, D). `small_head_attention_reference` is SDPA.

Queries and keys can be RMS-normalised per head first (the DiT's self-attentions, kernels/multihead_rms_norm.py): the
kernel normalises each query tile as it loads it and, where one query tile spans every query (the temporal
attention), each key tile too; otherwise the keys are normalised once beforehand, since every query tile would redo
them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .multihead_rms_norm import EPS, multihead_rms_norm, multihead_rms_norm_reference
from .triton_kernels import LOG2_E, triton_kernel, use_fused


def _tiles(keys: int) -> dict:
    """Tile shape and launch settings by key count, tuned for D = 32 on the DiT's temporal attention (32 keys), spatial
    self-attention (512 keys) and image cross-attention (1,370 keys; fewer registers, so more blocks per SM)."""
    if keys <= 32:
        return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 1, "num_stages": 2}
    if keys > 1024:
        return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3, "maxnreg": 96}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, "maxnreg": 128}


def small_head_attention_reference(q: Tensor, k: Tensor, v: Tensor, q_gain: Optional[Tensor] = None,
                                   k_gain: Optional[Tensor] = None) -> Tensor:
    """PyTorch path: q (B, Lq, H, D), k/v (B, Lk, H, D), gains (H, D) or None -> (B, Lq, H, D)."""
    q = q if q_gain is None else multihead_rms_norm_reference(q, q_gain)
    k = k if k_gain is None else multihead_rms_norm_reference(k, k_gain)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def small_head_attention_usable(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and k.dtype == v.dtype == q.dtype
            and q.shape[-1] in (16, 32) and all(t.stride(-1) == 1 for t in (q, k, v))
            and q.shape[0] * q.shape[2] < 65536 and triton_kernel(_build_kernel) is not None)  # (sample, head): grid y


def small_head_attention(q: Tensor, k: Tensor, v: Tensor, q_gain: Optional[Tensor] = None,
                         k_gain: Optional[Tensor] = None, fused: Optional[bool] = None) -> Tensor:
    """q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype, softmax scale 1/sqrt(D). q_gain, k_gain
    (H, D): RMS-normalise q / k per head first, x / rms(x) * gain (kernels/multihead_rms_norm.py). fused: None picks
    the Triton kernel where it runs (CUDA, Triton, one half precision, D 16 or 32, contiguous channels, not inside
    torch.compile); True requires it; False: SDPA."""
    if not use_fused(fused, small_head_attention_usable(q, k, v), "small-head attention needs CUDA, Triton, q, k, v "
                     "in one half precision with contiguous channels and D 16 or 32",
                     default=not torch.compiler.is_compiling()):
        return small_head_attention_reference(q, k, v, q_gain, k_gain)
    triton, kernel = triton_kernel(_build_kernel)
    B, LQ, H, D = q.shape
    LK = k.shape[1]
    tiles = _tiles(LK)
    if k_gain is not None and LQ > tiles["BLOCK_M"]:     # several query tiles: normalise the keys once, here
        k, k_gain = multihead_rms_norm(k, k_gain), None
    out = torch.empty(B, LQ, H, D, device=q.device, dtype=q.dtype)
    if out.numel():
        kernel[(triton.cdiv(LQ, tiles["BLOCK_M"]), B * H)](
            q, k, v, out, q if q_gain is None else q_gain, q if k_gain is None else k_gain, EPS, D ** -0.5 * LOG2_E,
            LQ, LK, H, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3], D=D,
            EVEN_N=LK % tiles["BLOCK_N"] == 0, NORM_Q=q_gain is not None, NORM_K=k_gain is not None, **tiles)
    return out


def _build_kernel(triton, tl):
    @triton.jit
    def rms_normalised(x, gain, eps, D: tl.constexpr):
        """x (rows, D) -> x / rms(x) * gain (D,), in float32."""
        x = x.to(tl.float32)
        return x * tl.rsqrt(tl.sum(x * x, 1) / D + eps)[:, None] * gain[None, :]

    @triton.jit
    def attend_tile(q, k_base, v_base, n, LK, skl, svl, offs_d, m_i, l_i, acc, k_gain, eps, D: tl.constexpr,
                    MASKED: tl.constexpr, NORM_K: tl.constexpr):
        """One key tile n of the online softmax: -> (m_i, l_i, acc). MASKED: the tile runs past the last key;
        NORM_K: RMS-normalise the keys with k_gain (D,) first."""
        if MASKED:
            n_ok = n[:, None] < LK
            k = tl.load(k_base + n[:, None] * skl + offs_d[None, :], mask=n_ok, other=0.0)
            v = tl.load(v_base + n[:, None] * svl + offs_d[None, :], mask=n_ok, other=0.0)
        else:
            k = tl.load(k_base + n[:, None] * skl + offs_d[None, :])
            v = tl.load(v_base + n[:, None] * svl + offs_d[None, :])
        if NORM_K:
            k = rms_normalised(k, k_gain, eps, D).to(v.dtype)
        s = tl.dot(q, tl.trans(k))                                              # (BLOCK_M, BLOCK_N)
        if MASKED:
            s = tl.where(n[None, :] < LK, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        return m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)

    @triton.jit
    def small_head_attention_kernel(Q, K, V, O, QG, KG, eps, scale_log2, LQ, LK, H, sqb, sql, sqh, skb, skl, skh,
                                    svb, svl, svh, sob, sol, soh, D: tl.constexpr, BLOCK_M: tl.constexpr,
                                    BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, NORM_Q: tl.constexpr,
                                    NORM_K: tl.constexpr):
        """One program: BLOCK_M queries of one (sample, head) against all keys, online softmax in log2 units; only
        a last, partial key tile is masked. NORM_Q / NORM_K: RMS-normalise queries / keys with the per-head gains
        QG / KG (H, D) as they are loaded."""
        b = tl.program_id(1) // H
        h = tl.program_id(1) % H
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        offs_n = tl.arange(0, BLOCK_N)
        m_ok = offs_m[:, None] < LQ
        q = tl.load(Q + b.to(tl.int64) * sqb + h * sqh + offs_m[:, None] * sql + offs_d[None, :], mask=m_ok, other=0.0)
        if NORM_Q:
            q = rms_normalised(q, tl.load(QG + h * D + offs_d).to(tl.float32), eps, D)
        q = (q * scale_log2).to(Q.dtype.element_ty)
        k_gain = tl.load(KG + h * D + offs_d).to(tl.float32) if NORM_K else tl.zeros([D], dtype=tl.float32)
        k_base = K + b.to(tl.int64) * skb + h * skh
        v_base = V + b.to(tl.int64) * svb + h * svh
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        full = LK - LK % BLOCK_N
        for start in range(0, full, BLOCK_N):
            m_i, l_i, acc = attend_tile(q, k_base, v_base, start + offs_n, LK, skl, svl, offs_d, m_i, l_i, acc,
                                        k_gain, eps, D=D, MASKED=False, NORM_K=NORM_K)
        if not EVEN_N:
            m_i, l_i, acc = attend_tile(q, k_base, v_base, full + offs_n, LK, skl, svl, offs_d, m_i, l_i, acc,
                                        k_gain, eps, D=D, MASKED=True, NORM_K=NORM_K)
        tl.store(O + b.to(tl.int64) * sob + h * soh + offs_m[:, None] * sol + offs_d[None, :],
                 (acc / l_i[:, None]).to(O.dtype.element_ty), mask=m_ok)

    return small_head_attention_kernel
