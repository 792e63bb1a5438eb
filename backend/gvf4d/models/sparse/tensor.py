"""Sparse voxel tensors: features on the active voxels of a batch of grids.

coords (N, 4) int32 `[batch, x, y, z]`, rows grouped by batch item (item 0's rows first); feats (N, ...) row-aligned.
Tensors derived from one another share a cache keyed by the grid stride (1 at full resolution, 2 after one
downsampling, ...): neighbour maps, window partitions and the maps that undo a downsampling live there, so
every layer at one resolution reuses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class SparseTensor:
    feats: Tensor
    coords: Tensor
    batch_size: int
    stride: int = 1
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.coords.ndim != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"SparseTensor.coords has shape {tuple(self.coords.shape)}, expected (N, 4)")
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"SparseTensor: {self.feats.shape[0]} feature rows for {self.coords.shape[0]} coords")

    @classmethod
    def from_coords(cls, feats: Tensor, coords: Tensor, batch_size: int | None = None) -> "SparseTensor":
        """Checks that rows are grouped by batch item (as every producer here writes them)."""
        b = coords[:, 0].long()
        if b.numel() and bool((b[1:] < b[:-1]).any()):
            raise ValueError("SparseTensor: rows must be grouped by batch item (coords[:, 0] non-decreasing)")
        n = int(b.max()) + 1 if b.numel() else 0
        return cls(feats, coords.int().contiguous(), batch_size if batch_size is not None else n)

    def replace(self, feats: Tensor) -> "SparseTensor":
        """Same voxels (and cache), new features."""
        return SparseTensor(feats, self.coords, self.batch_size, self.stride, self.cache)

    def cached(self, name: str, compute):
        key = (self.stride, name)
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    @property
    def batch_index(self) -> Tensor:
        """(N,) long: each row's batch item."""
        return self.cached("batch_index", lambda: self.coords[:, 0].long())

    @property
    def lengths(self) -> Tensor:
        """(B,) long: rows per batch item."""
        return self.cached("lengths", lambda: torch.bincount(self.batch_index, minlength=self.batch_size))

    def per_item(self, values: Tensor) -> Tensor:
        """(B, ...) one value per batch item -> (N, ...) one per row."""
        return values[self.batch_index]

    def item_grid(self, rows: Tensor) -> Tensor | None:
        """rows (N, ...) row-aligned with this tensor -> a (B, 1, N / B, ...) view where every batch item has as many
        rows (checked once per layout), else None."""
        lengths = self.lengths
        even = self.cached("even_items", lambda: bool((lengths == lengths[:1]).all()))
        return rows.view(self.batch_size, 1, -1, *rows.shape[1:]) if even and self.batch_size else None

    def items(self) -> list[slice]:
        """Row ranges of the batch items."""
        ends = torch.cumsum(self.lengths, 0).tolist()
        return [slice(e - n, e) for e, n in zip(ends, self.lengths.tolist())]
