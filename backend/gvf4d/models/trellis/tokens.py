"""How a transformer block's tokens are laid out, so that one block class serves dense and sparse inputs.

- DenseTokens: x (B, L, C), a full grid of patches (the sparse-structure flow).
- SparseTokens: x (N, C), the rows of a SparseTensor; self-attention within each batch item, or within each
  cubic window of `window` voxels shifted by `shift` (TRELLIS' "swin" mode); cross-attention from each batch
  item's rows to that item's context.
Both give per-item values (B, C) to every token (`rows`), a (B, 1, L, C) view of the tokens where the items are
equally long (`grid`), and the attention functions for SelfAttention / CrossAttention over (..., H, D) tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..attention import attention
from ..sparse import Segments, SparseTensor, segment_attention, window_partition


class DenseTokens:
    @staticmethod
    def rows(values: Tensor) -> Tensor:
        """(B, C) -> (B, 1, C)."""
        return values[:, None]

    @staticmethod
    def grid(x: Tensor) -> Tensor:
        """x (B, L, C) -> a (B, 1, L, C) view."""
        return x[:, None]

    @staticmethod
    def self_attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attention(q, k, v)

    @staticmethod
    def cross_attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attention(q, k, v)


@dataclass
class SparseTokens:
    x: SparseTensor
    window: Optional[int] = None
    shift: int = 0

    @property
    def items(self) -> Segments:
        """The batch items' rows as attention segments (computed once per sparse layout)."""
        return self.x.cached("items", lambda: Segments.of(self.x.lengths))

    def rows(self, values: Tensor) -> Tensor:
        """(B, C) -> (N, C)."""
        return self.x.per_item(values)

    def grid(self, x: Tensor) -> Optional[Tensor]:
        """x (N, C) -> a (B, 1, N / B, C) view where every batch item has as many rows, else None."""
        return self.x.item_grid(x)

    def self_attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q, k, v (N, H, D) -> (N, H, D)."""
        if self.window is None:
            return segment_attention(q, k, v, self.items)
        order, segments = self.x.cached(f"windows{self.window}/{self.shift}", self._windows)
        out = torch.empty_like(q)
        out[order] = segment_attention(q[order], k[order], v[order], segments)
        return out

    def _windows(self) -> tuple[Tensor, Segments]:
        order, lengths = window_partition(self.x.coords, self.window, self.shift)
        return order, Segments.of(lengths)

    def cross_attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (N, H, D), k/v (B, Lc, H, D) -> (N, H, D)."""
        b, lc = k.shape[:2]
        context = Segments(torch.full((b,), lc, dtype=torch.long, device=k.device), equal=True)
        return segment_attention(q, k.flatten(0, 1), v.flatten(0, 1), self.items, context)
