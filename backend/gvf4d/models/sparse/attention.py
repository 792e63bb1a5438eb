"""Attention over variable-length segments of rows (sparse tokens): per batch item, or per 3D window.

`segment_attention` takes queries (Nq, H, D) and keys/values (Nk, H, D) cut into consecutive segments (lengths
given); segment i of the queries attends to segment i of the keys only. flash-attn's varlen kernel runs it when
installed and usable; otherwise the segments are padded to one batch and PyTorch SDPA runs with a key mask
(no padding and no mask when all segments have one length, e.g. a batch of two copies of one object, so SDPA
can pick its flash kernel). The padding layout is computed once per layout (Segments) and reused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import flash_attn_usable


def _pad_index(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(S,) lengths -> index (S, Lmax) into the concatenated rows (clamped to 0 at padding) and, for the valid
    entries, their flat positions in that (S, Lmax) layout (N,)."""
    lmax = int(lengths.max()) if lengths.numel() else 0
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(lmax, device=lengths.device)
    valid = pos[None] < lengths[:, None]
    index = torch.where(valid, starts[:, None] + pos[None], torch.zeros_like(pos)[None])
    return index, torch.nonzero(valid.flatten())[:, 0]


@dataclass
class Segments:
    """Row segments (lengths (S,)) prepared once for many attention calls: equal lengths need no padding."""

    lengths: Tensor
    equal: bool
    index: Optional[Tensor] = None        # (S, Lmax), padded layouts only
    flat_valid: Optional[Tensor] = None   # (N,)
    mask: Optional[Tensor] = None         # (S, 1, 1, Lmax)

    @classmethod
    def of(cls, lengths: Tensor) -> "Segments":
        if bool((lengths == lengths[0]).all()):
            return cls(lengths, True)
        index, flat_valid = _pad_index(lengths)
        mask = (torch.arange(index.shape[1], device=lengths.device)[None] < lengths[:, None])[:, None, None, :]
        return cls(lengths, False, index, flat_valid, mask)

    def pad(self, t: Tensor) -> Tensor:
        """(N, H, D) -> (S, H, L, D)."""
        if self.equal:
            return t.reshape(len(self.lengths), -1, *t.shape[1:]).transpose(1, 2)
        return t[self.index].transpose(1, 2)

    def unpad(self, t: Tensor) -> Tensor:
        """(S, H, L, D) -> (N, H, D)."""
        t = t.transpose(1, 2)
        return t.flatten(0, 1) if self.equal else t.flatten(0, 1).index_select(0, self.flat_valid)


def _flash_varlen(q: Tensor, k: Tensor, v: Tensor, q_lengths: Tensor, k_lengths: Tensor) -> Tensor:
    from flash_attn import flash_attn_varlen_func
    cu_q, cu_k = (F.pad(torch.cumsum(n, 0), (1, 0)).int() for n in (q_lengths, k_lengths))
    return flash_attn_varlen_func(q, k, v, cu_q, cu_k, int(q_lengths.max()), int(k_lengths.max()))


def segment_attention(q: Tensor, k: Tensor, v: Tensor, q_segments: Segments, k_segments: Optional[Segments] = None,
                      backend: str = "auto") -> Tensor:
    """q (Nq, H, D), k/v (Nk, H, D) cut into segments (Segments.of(lengths), lengths summing to Nq/Nk)
    -> (Nq, H, D). Softmax scale 1/sqrt(D). k_segments defaults to q_segments (self-attention)."""
    k_segments = q_segments if k_segments is None else k_segments
    if backend == "flash" or (backend == "auto" and flash_attn_usable(q)):
        return _flash_varlen(q, k, v, q_segments.lengths, k_segments.lengths)
    mask = None if k_segments.equal else k_segments.mask
    out = F.scaled_dot_product_attention(q_segments.pad(q), k_segments.pad(k), k_segments.pad(v), attn_mask=mask)
    return q_segments.unpad(out)


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
