"""Attention over variable-length segments of rows (sparse tokens): per batch item, or per 3D window.

`segment_attention` takes queries (Nq, H, D) and keys/values (Nk, H, D) cut into consecutive segments (lengths
given); segment i of the queries attends to segment i of the keys only. flash-attn's varlen kernel runs it when
installed and usable; otherwise the segments are padded to one batch and PyTorch SDPA runs with a key mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import flash_attn_usable


def _pad_index(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(S,) lengths -> index (S, Lmax) into the concatenated rows (-1 for padding) and its validity mask."""
    lmax = int(lengths.max()) if lengths.numel() else 0
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(lmax, device=lengths.device)
    valid = pos[None] < lengths[:, None]
    return torch.where(valid, starts[:, None] + pos[None], torch.full_like(valid, -1, dtype=torch.long)), valid


def _flash_varlen(q, k, v, q_lengths, k_lengths):
    from flash_attn import flash_attn_varlen_func
    cu = lambda n: F.pad(torch.cumsum(n, 0), (1, 0)).int()  # noqa: E731
    return flash_attn_varlen_func(q, k, v, cu(q_lengths), cu(k_lengths), int(q_lengths.max()), int(k_lengths.max()))


def segment_attention(q: Tensor, k: Tensor, v: Tensor, q_lengths: Tensor, k_lengths: Tensor | None = None,
                      backend: str = "auto") -> Tensor:
    """q (Nq, H, D), k/v (Nk, H, D), q_lengths/k_lengths (S,) summing to Nq/Nk -> (Nq, H, D).
    Softmax scale 1/sqrt(D). k_lengths defaults to q_lengths (self-attention)."""
    k_lengths = q_lengths if k_lengths is None else k_lengths
    if backend == "flash" or (backend == "auto" and flash_attn_usable(q)):
        return _flash_varlen(q, k, v, q_lengths, k_lengths)
    q_idx, q_valid = _pad_index(q_lengths)
    k_idx, k_valid = _pad_index(k_lengths)
    gather = lambda t, idx: t[idx.clamp_min(0)].transpose(1, 2)       # noqa: E731  (S, H, L, D)
    mask = k_valid[:, None, None, :]                                   # (S, 1, 1, Lk)
    out = F.scaled_dot_product_attention(gather(q, q_idx), gather(k, k_idx), gather(v, k_idx), attn_mask=mask)
    return out.transpose(1, 2)[q_valid]


def window_partition(coords: Tensor, window_size: int, shift: int = 0) -> tuple[Tensor, Tensor]:
    """Groups active voxels into cubic windows as TRELLIS' swin attention does: (N, 4) coords ->
    order (N,) (rows sorted by window) and lengths (W,) (rows per non-empty window, in that order).
    Windows tile the grid shifted by `shift` voxels; each batch item has its own windows."""
    c = coords.long()
    shifted = c[:, 1:] + shift
    n_windows = [math.ceil((int(m) + 1) / window_size) for m in shifted.max(0).values.tolist()]
    w = shifted // window_size
    window = ((c[:, 0] * n_windows[0] + w[:, 0]) * n_windows[1] + w[:, 1]) * n_windows[2] + w[:, 2]
    order = torch.argsort(window, stable=True)
    _, lengths = torch.unique_consecutive(window[order], return_counts=True)
    return order, lengths
