"""The motion-VAE decoder's query rows: each canonical Gaussian's embedding, normalised for the cross-attention,

    h = norm(norm(g @ W.T + b, eps_g) + norm(fourier(g[:3]), eps_p), eps_q)

(layer norms without affine parameters; fourier: per coordinate [sin(x w), cos(x w)] over the frequencies w, as
PointFourierEmbed). g (N, 14) -> h (N, C). This is `norm(embed_queries(g))` of models/motion_vae.py, which the
modules run as a dozen kernels per chunk of Gaussians (the PyTorch path, MotionVAE.query_rows); the Triton kernel
computes a row in registers (float32) and writes h once, in half precision. Its sines are the hardware's
approximate sine after reduction to [-pi, pi] (absolute error ~1e-6, far below the output's half-precision rounding).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .triton_kernels import triton_kernel


def decoder_queries_usable(g: Tensor, weight: Tensor, bias: Tensor, omega: Tensor) -> bool:
    """Whether the kernel runs on these arguments (CUDA, Triton, half-precision weights, contiguous channels,
    C = 6 x the Fourier frequencies)."""
    return (g.is_cuda and weight.dtype in (torch.float16, torch.bfloat16) and bias.dtype == weight.dtype
            and weight.shape[0] == 6 * omega.shape[0] and g.stride(1) == 1 and weight.is_contiguous()
            and triton_kernel(_build_kernel) is not None)


def decoder_queries(g: Tensor, weight: Tensor, bias: Tensor, omega: Tensor,
                    eps: tuple[float, float, float]) -> Tensor:
    """The kernel (where decoder_queries_usable): g (N, K) canonical rows, weight (C, K) / bias (C,) the Gaussian
    embedding's linear layer, omega (F,) the Fourier frequencies (C = 6 F), eps: the three norms' epsilons
    -> (N, C) in the weights' dtype."""
    N, K = g.shape
    C = weight.shape[0]
    triton, kernel = triton_kernel(_build_kernel)
    out = torch.empty(N, C, device=g.device, dtype=weight.dtype)
    if N:
        rows = 4          # rows per program
        # the weight transposed and omega in float32, made per call: the kernel reads these faster than the (C, K)
        # weight and float64 omega in place
        kernel[(triton.cdiv(N, rows),)](g, weight.t().contiguous(), bias, omega.float().contiguous(), out, N,
                                        g.stride(0), *eps, K=K, C=C, F_=omega.shape[0], BLOCK_ROWS=rows,
                                        BLOCK_C=triton.next_power_of_2(C), num_warps=4)
    return out


def _build_kernel(triton, tl):
    @triton.jit
    def _sin(x):
        """sin(x) in float32: reduced to [-pi, pi], then the approximate sine unit (MUFU)."""
        x = x - 6.283185307179586 * tl.extra.cuda.libdevice.rint(x * 0.15915494309189535)
        return tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)

    @triton.jit
    def _norm(x, ok, C: tl.constexpr, eps):
        mean = tl.sum(x, 1) / C
        centred = tl.where(ok, x - mean[:, None], 0.0)
        return centred * tl.rsqrt(tl.sum(centred * centred, 1) / C + eps)[:, None]

    @triton.jit
    def decoder_queries_kernel(G, WT, Bias, Omega, O, N, stride_g, eps_g, eps_p, eps_q, K: tl.constexpr,
                               C: tl.constexpr, F_: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_C)
        row_ok, col_ok = rows < N, cols < C
        ok = row_ok[:, None] & col_ok[None, :]
        # the Gaussian embedding's linear layer: K (14) products per channel, in float32 on half inputs
        lin = tl.zeros([BLOCK_ROWS, BLOCK_C], dtype=tl.float32) + tl.load(Bias + cols, mask=col_ok, other=0.0).to(
            tl.float32)[None, :]
        for k in tl.static_range(K):
            gk = tl.load(G + rows * stride_g + k, mask=row_ok, other=0.0).to(WT.dtype.element_ty).to(tl.float32)
            wk = tl.load(WT + k * C + cols, mask=col_ok, other=0.0).to(tl.float32)     # row k of the (K, C) transpose
            lin += gk[:, None] * wk[None, :]
        # Fourier features: channel c is coordinate c // 2F, sin for (c mod 2F) < F, else cos (= sin shifted)
        coord = cols // (2 * F_)
        within = cols % (2 * F_)
        freq = tl.load(Omega + within % F_, mask=col_ok, other=0.0)
        x = tl.zeros([BLOCK_ROWS, BLOCK_C], dtype=tl.float32)
        for d in tl.static_range(3):
            xd = tl.load(G + rows * stride_g + d, mask=row_ok, other=0.0).to(tl.float32)
            x = tl.where((coord == d)[None, :], xd[:, None], x)
        phase = x * freq[None, :] + tl.where(within >= F_, 1.5707963267948966, 0.0)[None, :]     # cos = sin(+pi/2)
        fourier = tl.where(ok, _sin(phase), 0.0)
        lin = tl.where(ok, lin, 0.0)
        h = _norm(_norm(lin, ok, C, eps_g) + _norm(fourier, ok, C, eps_p), ok, C, eps_q)
        tl.store(O + rows[:, None] * C + cols[None, :], h.to(O.dtype.element_ty), mask=ok)

    return decoder_queries_kernel
