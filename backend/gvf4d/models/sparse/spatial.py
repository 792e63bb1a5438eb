"""Changing a sparse tensor's resolution by 2: average pooling down, nearest-neighbour back up.

As TRELLIS pools: voxels map to (batch, x // 2, y // 2, z // 2), the new voxels are sorted by that key, and each
new feature is the sum of its children divided by (children + 1) (the published scatter-mean starts from a
zero and counts it). The map back to the children is kept in the shared cache so that `upsample` restores the
exact rows (order included) that were pooled.
"""
from __future__ import annotations

import torch

from .tensor import SparseTensor


def _pooling(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 4) fine voxels -> coarse voxels (M, 4) sorted by (batch, x, y, z), each fine voxel's parent (N,), and the
    published divisor per coarse voxel (children + 1) (M,)."""
    c = coords.long()
    coarse = torch.cat([c[:, :1], c[:, 1:] // 2], dim=1)
    extent = coarse[:, 1:].max(0).values + 1 if c.shape[0] else torch.ones(3, dtype=torch.long)
    ex, ey, ez = extent.tolist()
    code = ((coarse[:, 0] * ex + coarse[:, 1]) * ey + coarse[:, 2]) * ez + coarse[:, 3]
    code, parent = torch.unique(code, return_inverse=True)
    divisor = torch.bincount(parent, minlength=code.shape[0]) + 1
    new = torch.stack([code // (ex * ey * ez), code // (ey * ez) % ex, code // ez % ey, code % ez], dim=1).int()
    return new, parent, divisor


def downsample(x: SparseTensor) -> SparseTensor:
    # the voxel maps depend on the coordinates only: computed once per layout, reused by every sampling step
    coords, parent, divisor = x.cached("pooling", lambda: _pooling(x.coords))
    total = x.feats.new_zeros(coords.shape[0], *x.feats.shape[1:]).index_add_(0, parent, x.feats)
    feats = total / divisor.to(x.feats.dtype).view(-1, *([1] * (x.feats.dim() - 1)))
    out = SparseTensor(feats, coords, x.batch_size, x.stride * 2, x.cache)
    out.cache[(out.stride, "upsample")] = (x.coords, parent)
    return out


def upsample(x: SparseTensor) -> SparseTensor:
    key = (x.stride, "upsample")
    if key not in x.cache:
        raise ValueError("upsample: this sparse tensor was not produced by downsample (no children to restore)")
    fine_coords, parent = x.cache[key]
    return SparseTensor(x.feats[parent], fine_coords, x.batch_size, x.stride // 2, x.cache)
