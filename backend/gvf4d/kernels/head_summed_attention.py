"""Softmax attention of one query set against many key/value sets, summed over heads:

    out[b, t, m] = sum_h softmax(q[b, m, h] . k[b, t, :, h] * scale) @ v[b, t, :, h]  (+ bias)

q (B, M, H, D) is shared by the T key/value sets k (B, T, N, H, D), v (B, T, N, H, E); out (B, T, M, E), bias (E,).
This is the motion-VAE decoder's cross-attention once its value, output and head projections are folded into
per-head 14-channel values (every Gaussian queries every frame with the same query), and, with H = 1, any
attention whose heads share their keys and values.

Two paths with the same result: `head_summed_attention_reference` (PyTorch SDPA per frame, then a sum over
heads) and, on CUDA with Triton, one fused kernel that keeps the query in registers across heads, never writes
the per-head outputs, and gets the softmax denominator from the value product (a channel of ones). For heads of 64
or more channels on GPUs with the tensor memory accelerator (sm_90+) it loads key and value tiles through TMA
descriptors. Where the values' storage already holds the ones (`ones_in_values`, as the folded decoder lays them
out), the value tiles go from TMA to the tensor cores untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_kernels import LOG2_E, host_tensor_descriptor, triton_kernel, use_fused


def head_summed_attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """PyTorch path, without bias and out. q (B, M, H, D), k (B, T, N, H, D), v (B, T, N, H, E) -> (B, T, M, E) in
    q's dtype."""
    B, M, H, D = q.shape
    T, E = k.shape[1], v.shape[-1]
    if q.is_cuda and E != D:     # the fused SDPA kernels want equal widths: zeros change no score and no output
        width = max(D, E)
        q, k, v = F.pad(q, (0, width - D)), F.pad(k, (0, width - D)), F.pad(v, (0, width - E))
        D = width
    qh = q.transpose(1, 2)[:, None].expand(B, T, H, M, D).reshape(B * T, H, M, D)
    out = F.scaled_dot_product_attention(qh, k.flatten(0, 1).transpose(1, 2), v.flatten(0, 1).transpose(1, 2),
                                         scale=scale)                     # (B*T, H, M, E')
    return out.sum(1)[..., :E].reshape(B, T, M, E)


def head_summed_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None = None,
                          out: Tensor | None = None, fused: bool | None = None, ones_in_values: bool = False) -> Tensor:
    """q (B, M, H, D), k (B, T, N, H, D), v (B, T, N, H, E), bias (E,) or None -> (B, T, M, E) in q's dtype, written
    into out (any strides, e.g. a slice of a larger result) when given. fused: None picks the Triton kernel where
    it runs (CUDA, half precision, Triton installed, D one of 16, 32, 64, 128, E < 64); True requires it; False
    takes the PyTorch path. ones_in_values: v is a [..., :E] view of rows `value_width(E)` wide whose channel E holds
    ones (the kernel then reads the value tiles as they are; `value_width`)."""
    B, M, H, D = q.shape
    T, N, E = k.shape[1], k.shape[2], v.shape[-1]
    if k.shape != (B, T, N, H, D) or v.shape[:4] != (B, T, N, H):
        raise ValueError(f"head_summed_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    usable = (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and k.dtype == v.dtype == q.dtype
              and D in (16, 32, 64, 128) and E < 64 and triton_kernel(_build_kernel) is not None)
    if not use_fused(fused, usable, "head-summed attention needs CUDA, Triton, q, k, v in one half precision, "
                     "D one of 16, 32, 64, 128 and E < 64"):
        result = head_summed_attention_reference(q, k, v, scale)
        result = result if bias is None else result + bias
        return result if out is None else out.copy_(result)
    if torch.compiler.is_compiling():
        result = torch.ops.gvf4d.head_summed_attention(q, k, v, scale, bias)
        return result if out is None else out.copy_(result)
    return _launch(q, k, v, scale, bias, out, ones_in_values)   # directly: the operator's dispatch costs CPU time


@torch.library.custom_op("gvf4d::head_summed_attention", mutates_args=())
def _fused(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None) -> Tensor:
    """The kernel as one operator for torch.compile (opaque to it; CUDA graphs capture its launch)."""
    return _launch(q, k, v, scale, bias, None, False)


@_fused.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None) -> Tensor:
    return q.new_empty(q.shape[0], k.shape[1], q.shape[1], v.shape[-1])


def value_width(channels: int) -> int:
    """The kernel's value tile width for E channels: a power of two (at least 16) with at least one spare channel,
    where the kernel puts ones, so the value product also sums the probabilities (the softmax denominator costs no
    extra pass). Values laid out `value_width(E)` apart (a [..., :E] view) are read in place; others are copied
    into that layout per call. Rows that hold the ones in channel E already spare the kernel setting them
    (`head_summed_attention(..., ones_in_values=True)`)."""
    return max(16, 1 << channels.bit_length())


def _readable_at_width(v: Tensor, width: int) -> bool:
    """Whether every row of v (contiguous channels) can be read `width` channels wide within its storage (the
    channels past E are read but never used)."""
    last = v.storage_offset() + sum((n - 1) * s for n, s in zip(v.shape, v.stride()))
    return v.stride(-1) == 1 and last + width - v.shape[-1] < v.untyped_storage().nbytes() // v.element_size()


def _launch(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None, out: Tensor | None,
            ones_in_values: bool) -> Tensor:
    triton, kernel = triton_kernel(_build_kernel)
    B, M, H, D = q.shape
    T, N, E = k.shape[1], k.shape[2], v.shape[-1]
    width = value_width(E)
    if not _readable_at_width(v, width):
        v, ones_in_values = F.pad(v, (0, width - E)), False
    if out is None:
        out = torch.empty(B, T, M, E, device=q.device, dtype=q.dtype)
    descriptors = _tma_descriptors(k, v, width) if D >= 64 else None
    tiles = (TMA_ONES_TILES if ones_in_values else TMA_TILES) if descriptors else TILES
    grid = (triton.cdiv(M, tiles["BLOCK_M"]), B * T)
    kernel[grid](q, *(descriptors or (k, v)), out, q if bias is None else bias, scale * LOG2_E, M, N, T, H,
                 *q.stride(), *k.stride(), *v.stride(), *out.stride(), D=D, E=E, E_PAD=width,
                 EVEN_N=N % tiles["BLOCK_N"] == 0, HAS_BIAS=bias is not None, TMA=descriptors is not None,
                 ONES_IN_V=ones_in_values, **tiles)
    return out


# tiles tuned for the motion-VAE decoder's chunk and the DiT's folded canonical attention; with the ones already in
# the values' storage the kernel is held to 128 registers (two blocks per SM)
TILES = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}
TMA_TILES = {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}
TMA_ONES_TILES = {**TMA_TILES, "maxnreg": 128}


def _tma_descriptors(k: Tensor, v: Tensor, width: int):
    """k (B, T, N, H, D), v (B, T, N, H, E) readable `width` wide -> TMA descriptors of their (b, t, n) rows x
    (heads x channels) for the kernel, or None where the GPU (before sm_90), Triton (no host descriptors) or the
    layouts (rows one stride apart, heads side by side, 16-byte aligned) do not allow them."""
    descriptor = host_tensor_descriptor(k.device)
    if descriptor is None:
        return None
    values = torch.as_strided(v, (*v.shape[:-1], width), v.stride(), v.storage_offset())
    descriptors = []
    for t, channels in ((k, k.shape[-1]), (values, width)):
        B, T, N, H = t.shape[:4]
        row = t.stride(2)
        if not ((T == 1 or t.stride(1) == N * row) and (B == 1 or t.stride(0) == T * N * row)
                and t.stride(3) == channels and t.stride(4) == 1
                and t.data_ptr() % 16 == 0 and row * t.element_size() % 16 == 0):
            return None
        descriptors.append(descriptor(t, shape=[B * T * N, H * channels], strides=[row, 1],
                                            block_shape=[TMA_TILES["BLOCK_N"], channels]))
    return descriptors


def _build_kernel(triton, tl):
    @triton.jit
    def head_summed_attention_kernel(Q, K, V, O, Bias, scale_log2, M, N, T, H,
               sqb, sqm, sqh, sqd, skb, skt, skn, skh, skd, svb, svt, svn, svh, sve, sob, sot, som, soe,
               D: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               EVEN_N: tl.constexpr, HAS_BIAS: tl.constexpr, TMA: tl.constexpr, ONES_IN_V: tl.constexpr):
        """One program: BLOCK_M queries against the keys/values of one (b, t), all heads, online softmax. Value
        rows are read E_PAD wide; channel E of the tile is set to ones (ONES_IN_V: it holds them already), the
        channels past it are never used. TMA: K and V are descriptors of the (b, t, n) rows (keys past N in a last
        partial tile are masked in the scores; the rows read there belong to the next (b, t) or are zeros)."""
        pid_m = tl.program_id(0)
        bt = tl.program_id(1)
        b = bt // T
        t = bt % T
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        offs_e = tl.arange(0, E_PAD)
        offs_n = tl.arange(0, BLOCK_N)
        m_ok = offs_m[:, None] < M
        ones = offs_e[None, :] == E                     # the spare value channel that carries the denominator
        out = tl.zeros([BLOCK_M, E_PAD], dtype=tl.float32)
        for h in range(H):
            q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, mask=m_ok, other=0.0)
            q = (q * scale_log2).to(Q.dtype.element_ty)        # scores come out in log2 units
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            acc = tl.zeros([BLOCK_M, E_PAD], dtype=tl.float32)
            for start in range(0, N, BLOCK_N):
                n = start + offs_n
                if TMA:
                    k = K.load([bt * N + start, h * D])
                    v = V.load([bt * N + start, h * E_PAD])
                else:
                    k_rows = K + b * skb + t * skt + h * skh + n[:, None] * skn
                    v_rows = V + b * svb + t * svt + h * svh + n[:, None] * svn
                    if EVEN_N:
                        k = tl.load(k_rows + offs_d[None, :] * skd)
                        v = tl.load(v_rows + offs_e[None, :] * sve)
                    else:                   # keys past N: no score, and zero values (the ones channel too)
                        n_ok = n[:, None] < N
                        k = tl.load(k_rows + offs_d[None, :] * skd, mask=n_ok, other=0.0)
                        v = tl.load(v_rows + offs_e[None, :] * sve, mask=n_ok, other=0.0)
                if not ONES_IN_V:
                    v = tl.where(ones, 1.0, v)
                s = tl.dot(q, tl.trans(k))                                      # (BLOCK_M, BLOCK_N)
                if not EVEN_N:
                    s = tl.where(n[None, :] < N, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.exp2(s - m_new[:, None]).to(Q.dtype.element_ty)
                acc = acc * tl.exp2(m_i - m_new)[:, None] + tl.dot(p, v.to(Q.dtype.element_ty))
                m_i = m_new
            out += acc / tl.sum(tl.where(ones, acc, 0.0), 1)[:, None]
        if HAS_BIAS:
            out += tl.load(Bias + offs_e, mask=offs_e < E, other=0.0).to(tl.float32)[None, :]
        tl.store(O + b * sob + t * sot + offs_m[:, None] * som + offs_e[None, :] * soe,
                 out.to(O.dtype.element_ty), mask=m_ok & (offs_e[None, :] < E))

    return head_summed_attention_kernel
