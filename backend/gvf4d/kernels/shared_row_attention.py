"""One-head softmax attention whose keys and values are the same rows:

    out[b, m] = softmax_s(q[b, m] . rows[b, s] * scale) @ rows[b, s, :E]

q (B, M, 16), rows (B, S, 16), out (B, M, E), E <= 14. This is the DiT's canonical-Gaussian attention once folded
(models/gvf_dit.py): every (token, head) pair queries the canonical Gaussians' 14 channels, zero-padded to 16.
Channel 15 of q or of rows must be zero (padding): the kernel puts ones in the rows' channel 15, so the value
product also sums the weights (the softmax denominator), and leaves that channel out of the scores.

Two paths with the same result: `head_summed_attention` (Triton's kernel, or PyTorch SDPA) and, on CUDA GPUs of
sm_80+, a CUDA kernel built with NVRTC (kernels/cuda_kernels.py). Each block of 16 warps holds all rows in shared
memory (32 bytes a row: the DiT's 4,096 take 128 KiB) and each warp takes 32 queries at a time through them on
mma.sync tensor-core products, its probabilities passed from the score product's registers straight to the value
product's, 64 keys per online-softmax update; one exponential in eight is a cubic polynomial on the FMA units
(2^x = 2^round(x) * p(x - round(x)), relative error 7.5e-5, under half precision's rounding), which relieves the
exponential unit.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .cuda_kernels import cuda_kernel, reserve_shared_memory
from .head_summed_attention import head_summed_attention
from .triton_kernels import LOG2_E, use_fused

WIDTH = 16          # channels of q and rows
WARPS = 16          # warps per block
QUERIES = 32        # queries per warp at a time (two 16-row tensor-core tiles)
KEY_STEP = 64       # keys per online-softmax update

_SOURCE = r"""
typedef unsigned int u32;
#define FULL 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ void mma_16x8x16(float* d, const u32* a, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." DTYPE "." DTYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
               "{%8,%9}, {%0,%1,%2,%3};"
    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void load_matrices(u32* r, u32 address) {          // four 8x8 tiles, a row per lane
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
__device__ __forceinline__ void load_matrices_transposed(u32* r, u32 address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
__device__ __forceinline__ float exp2_unit(float x) {
  float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y;
}
__device__ __forceinline__ float exp2_polynomial(float x) {   // on the FMA units: 2^j * p(f), x = j + f, |f| <= 1/2
  x = fmaxf(x, -126.f);
  float shifted = x + 12582912.f;                             // 1.5 * 2^23: j in the low mantissa bits
  float f = x - (shifted - 12582912.f);
  float p = fmaf(fmaf(fmaf(0.05517148f, f, 0.24261091f), f, 0.69326099f), f, 0.99992809f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(shifted) << 23));
}
__device__ __forceinline__ u32 pack(float lo, float hi) {
  u32 r; asm("cvt.rn." DTYPE "x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
__device__ __forceinline__ u32 shared_address(const void* p) {
  u32 a; asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p)); return a;
}
// row n's 16-byte half c (channels 8c..8c+7) lies at n * 32 + (c ^ bit 2 of n) * 16: eight rows of one half fall
// in eight distinct bank groups, so the 8x8 matrix loads have no bank conflicts
__device__ __forceinline__ u32 row_half(int n, int c) { return n * 32 + ((c ^ ((n >> 2) & 1)) << 4); }

// grid (blocks, B); M queries, S rows per sample; out rows E channels apart
extern "C" __global__ void __launch_bounds__(WARPS * 32, 1)
shared_row_attention(const u32* __restrict__ q, const uint4* __restrict__ rows, u32* __restrict__ out,
                     int M, int S, double scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  const float c = (float)scale_log2;
  const int b = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, col = (lane & 3) * 2;          // the lane's row in a tile and its pair of columns
  const int S_pad = (S + KEY_STEP - 1) / KEY_STEP * KEY_STEP;
  for (int i = threadIdx.x; i < S_pad * 2; i += WARPS * 32) {
    int n = i >> 1, half = i & 1;
    uint4 v = {0u, 0u, 0u, 0u};
    if (n < S) {
      v = rows[((long long)b * S + n) * 2 + half];
      if (half) v.w = (v.w & 0xffffu) | (ONE << 16);      // channel 15 := 1
    }
    *(uint4*)(smem + row_half(n, half)) = v;
  }
  __syncthreads();
  const u32 base = shared_address(smem);
  const int key_row = ((lane >> 4) << 3) + (lane & 7), key_half = (lane >> 3) & 1;        // ldmatrix row per lane
  const int value_row = (((lane >> 3) & 1) << 3) + (lane & 7), value_half = lane >> 4;
  const int tiles = (M + 16 * MT - 1) / (16 * MT);
  const long long q0 = (long long)b * M * 8, out0 = (long long)b * M * (E / 2);
  for (int tile = blockIdx.x * WARPS + warp; tile < tiles; tile += gridDim.x * WARPS) {
    const int r0 = tile * 16 * MT;
    u32 qa[MT][4];                                          // query fragments; channel 15 left out of the scores
    _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) _Pragma("unroll") for (int j = 0; j < 4; ++j) {
      int row = r0 + mt * 16 + g + (j & 1) * 8, word = (col >> 1) + (j >> 1) * 4;
      qa[mt][j] = row < M ? q[q0 + (long long)row * 8 + word] : 0u;
      if (word == 7) qa[mt][j] &= 0xffffu;
    }
    float acc[MT][2][4], m_run[MT][2];                      // channels 0-15 per row; channel 15 sums the weights
    _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) {
      m_run[mt][0] = m_run[mt][1] = NEG_INF;
      _Pragma("unroll") for (int nt = 0; nt < 2; ++nt) _Pragma("unroll") for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
    }
    for (int n0 = 0; n0 < S_pad; n0 += KEY_STEP) {
      float s[MT][NT][4];                                   // scores: n-tile nt holds keys n0 + 8 nt .. + 7
      _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) _Pragma("unroll") for (int nt = 0; nt < NT; ++nt)
        _Pragma("unroll") for (int i = 0; i < 4; ++i) s[mt][nt][i] = 0.f;
      _Pragma("unroll") for (int kg = 0; kg < NT / 2; ++kg) {
        u32 kb[4];
        load_matrices(kb, base + row_half(n0 + kg * 16 + key_row, key_half));
        _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) {
          mma_16x8x16(s[mt][2 * kg], qa[mt], kb[0], kb[1]);
          mma_16x8x16(s[mt][2 * kg + 1], qa[mt], kb[2], kb[3]);
        }
      }
      if (n0 + KEY_STEP > S) {
        _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) _Pragma("unroll") for (int nt = 0; nt < NT; ++nt)
          _Pragma("unroll") for (int i = 0; i < 4; ++i) if (n0 + nt * 8 + col + (i & 1) >= S) s[mt][nt][i] = NEG_INF;
      }
      _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) {
        float mx0 = m_run[mt][0], mx1 = m_run[mt][1];      // rows g and g + 8, over the quad's lanes
        _Pragma("unroll") for (int nt = 0; nt < NT; ++nt) {
          mx0 = fmaxf(mx0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
          mx1 = fmaxf(mx1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 2));
        const float a0 = exp2_unit((m_run[mt][0] - mx0) * c), a1 = exp2_unit((m_run[mt][1] - mx1) * c);
        m_run[mt][0] = mx0; m_run[mt][1] = mx1;
        _Pragma("unroll") for (int nt = 0; nt < 2; ++nt) {
          acc[mt][nt][0] *= a0; acc[mt][nt][1] *= a0; acc[mt][nt][2] *= a1; acc[mt][nt][3] *= a1;
        }
        const float o0 = -mx0 * c, o1 = -mx1 * c;
        _Pragma("unroll") for (int nt = 0; nt < NT; ++nt) {
          float* t = s[mt][nt];
          if (nt == NT - 1) {
            t[0] = exp2_polynomial(fmaf(t[0], c, o0)); t[1] = exp2_polynomial(fmaf(t[1], c, o0));
            t[2] = exp2_polynomial(fmaf(t[2], c, o1)); t[3] = exp2_polynomial(fmaf(t[3], c, o1));
          } else {
            t[0] = exp2_unit(fmaf(t[0], c, o0)); t[1] = exp2_unit(fmaf(t[1], c, o0));
            t[2] = exp2_unit(fmaf(t[2], c, o1)); t[3] = exp2_unit(fmaf(t[3], c, o1));
          }
        }
      }
      _Pragma("unroll") for (int kg = 0; kg < NT / 2; ++kg) {
        u32 vb[4];
        load_matrices_transposed(vb, base + row_half(n0 + kg * 16 + value_row, value_half));
        _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) {  // the score tiles are the value product's operand
          const float* lo = s[mt][2 * kg];
          const float* hi = s[mt][2 * kg + 1];
          u32 pa[4] = {pack(lo[0], lo[1]), pack(lo[2], lo[3]), pack(hi[0], hi[1]), pack(hi[2], hi[3])};
          mma_16x8x16(acc[mt][0], pa, vb[0], vb[1]);
          mma_16x8x16(acc[mt][1], pa, vb[2], vb[3]);
        }
      }
    }
    _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) {
      const float i0 = 1.f / __shfl_sync(FULL, acc[mt][1][1], lane | 3);
      const float i1 = 1.f / __shfl_sync(FULL, acc[mt][1][3], lane | 3);
      const int row0 = r0 + mt * 16 + g, row1 = row0 + 8;
      _Pragma("unroll") for (int nt = 0; nt < 2; ++nt) {
        const int ch = nt * 8 + col;
        if (ch < E) {
          if (row0 < M) out[out0 + (long long)row0 * (E / 2) + (ch >> 1)] = pack(acc[mt][nt][0] * i0, acc[mt][nt][1] * i0);
          if (row1 < M) out[out0 + (long long)row1 * (E / 2) + (ch >> 1)] = pack(acc[mt][nt][2] * i1, acc[mt][nt][3] * i1);
        }
      }
    }
  }
}
"""

_TYPES = {torch.float16: ("f16", 0x3C00), torch.bfloat16: ("bf16", 0x3F80)}   # PTX type, bits of 1.0


def _kernel(dtype: torch.dtype, channels: int, device: torch.device):
    """The kernel for values of `channels` channels in `dtype`, built for and loaded on `device` (None: not built)."""
    name, one = _TYPES[dtype]
    defines = {"DTYPE": f'"{name}"', "ONE": f"{one}u", "E": channels, "WARPS": WARPS, "MT": QUERIES // 16,
               "KEY_STEP": KEY_STEP, "NT": KEY_STEP // 8}
    header = "".join(f"#define {key} {value}\n" for key, value in defines.items())
    return cuda_kernel(header + _SOURCE, "shared_row_attention", torch.device(device).index or 0)


def _shared_bytes(rows: int) -> int:
    return -(-rows // KEY_STEP) * KEY_STEP * WIDTH * 2


def shared_row_attention_usable(q: Tensor, rows: Tensor, channels: int = 14) -> bool:
    """Whether the CUDA kernel runs these inputs: CUDA sm_80+, one half precision, contiguous (B, M, 16) and
    (B, S, 16) tensors 16-byte aligned, the rows fitting in a block's shared memory, NVRTC available."""
    if not (q.is_cuda and q.dtype in _TYPES and rows.dtype == q.dtype and q.shape[-1] == rows.shape[-1] == WIDTH
            and q.is_contiguous() and rows.is_contiguous() and rows.data_ptr() % 16 == 0 and q.data_ptr() % 4 == 0):
        return False
    props = torch.cuda.get_device_properties(q.device)
    return (props.major >= 8 and 0 < rows.shape[1] and _shared_bytes(rows.shape[1]) <= props.shared_memory_per_block_optin
            and _kernel(q.dtype, channels, q.device) is not None)


def shared_row_attention(q: Tensor, rows: Tensor, channels: int, scale: float,
                         fused: Optional[bool] = None) -> Tensor:
    """q (B, M, 16), rows (B, S, 16), channel 15 of either zero -> (B, M, channels) in q's dtype, the values being
    rows[..., :channels] (channels even, at most 14). fused: None picks the CUDA kernel where it runs (see
    `shared_row_attention_usable`; not inside torch.compile); True requires it; False takes `head_summed_attention`."""
    B, M, _ = q.shape
    if channels % 2 or not 0 < channels <= 14:
        raise ValueError(f"shared_row_attention: {channels} value channels; it takes an even number up to 14")
    usable = shared_row_attention_usable(q, rows, channels) and not torch.compiler.is_compiling()
    if not use_fused(fused, usable, "shared-row attention needs a CUDA GPU of sm_80+ with NVRTC, q and rows "
                     "contiguous (B, M, 16) / (B, S, 16) in one half precision, S fitting in shared memory"):
        keys = rows[:, None, :, None]                                               # (B, 1, S, 1, 16)
        return head_summed_attention(q[:, :, None], keys, keys[..., :channels], scale)[:, 0]
    out = torch.empty(B, M, channels, device=q.device, dtype=q.dtype)
    if not out.numel():
        return out
    kernel = _kernel(q.dtype, channels, q.device)
    shared = _shared_bytes(rows.shape[1])
    blocks = min(-(-M // (QUERIES * WARPS)), torch.cuda.get_device_properties(q.device).multi_processor_count)
    with torch.cuda.device(q.device):
        reserve_shared_memory(kernel, shared)
        kernel(grid=(blocks, B, 1), block=(WARPS * 32, 1, 1), args=[q, rows, out, M, rows.shape[1], scale * LOG2_E],
               shared_mem=shared)
    return out
