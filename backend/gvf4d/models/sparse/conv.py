"""Submanifold sparse 3D convolution (output on the input's active voxels), as spconv's SubMConv3d computes it.

Weights are kept in spconv's layout (out, kx, ky, kz, in) under `conv.weight` / `conv.bias`, so TRELLIS
checkpoints load unchanged. Two paths compute the same thing:
- spconv, when installed (`spconv.pytorch`), on its own kernels: used by default on CUDA only. Its CPU build
  races when run on several threads (wrong rows, seen with spconv 2.3.8), so on CPU it runs on request only
  and then on one thread;
- our PyTorch path: a neighbour map (for every active voxel, the row of each of its k^3 neighbours, found by
  binary search over sorted voxel keys), then one gather and one matrix product per chunk of rows.
Both equal a dense `conv3d(padding=k//2)` with weight `w.permute(0, 4, 1, 2, 3)` read at the active voxels.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor, nn

from .tensor import SparseTensor

_GATHER_ELEMENTS = 1 << 26   # rows per chunk are chosen so that one gathered block holds at most this many values


@functools.cache
def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _voxel_keys(coords: Tensor, extent: int) -> Tensor:
    """(N, 4) [b, x, y, z] with x, y, z in [-1, extent - 2] -> (N,) int64 keys, unique per voxel."""
    c = coords.long()
    return ((c[:, 0] * extent + c[:, 1] + 1) * extent + c[:, 2] + 1) * extent + c[:, 3] + 1


def kernel_offsets(kernel_size: int, device=None) -> Tensor:
    """(k^3, 3) offsets in (dx, dy, dz) row-major order, matching the weight's (kx, ky, kz) axes."""
    r = torch.arange(kernel_size, device=device) - kernel_size // 2
    return torch.cartesian_prod(r, r, r).reshape(-1, 3)


def neighbour_map(coords: Tensor, kernel_size: int = 3) -> Tensor:
    """(N, 4) int coords -> (N, k^3) long: the row of each neighbour, or N where that voxel is inactive."""
    n = coords.shape[0]
    pad = kernel_size // 2
    extent = int(coords[:, 1:].max()) + 2 * pad + 2 if n else 1
    keys = _voxel_keys(coords, extent)
    sorted_keys, order = torch.sort(keys)
    offsets = kernel_offsets(kernel_size, coords.device)
    shifted = coords.long()[:, None, :].repeat(1, offsets.shape[0], 1)
    shifted[..., 1:] += offsets
    query = _voxel_keys(shifted.reshape(-1, 4), extent)
    pos = torch.searchsorted(sorted_keys, query).clamp_max(max(n - 1, 0))
    found = sorted_keys[pos] == query
    rows = torch.where(found, order[pos], torch.full_like(pos, n))
    return rows.reshape(n, offsets.shape[0])


def submanifold_conv3d(feats: Tensor, neighbours: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """feats (N, C_in), neighbours (N, K) from neighbour_map, weight (C_out, k, k, k, C_in), bias (C_out,)
    -> (N, C_out). Reference PyTorch path."""
    n, c_in = feats.shape
    c_out = weight.shape[0]
    w = weight.permute(1, 2, 3, 4, 0).reshape(-1, c_out).to(feats.dtype)          # (K * C_in, C_out)
    padded = torch.cat([feats, feats.new_zeros(1, c_in)])
    chunk = max(1, _GATHER_ELEMENTS // (neighbours.shape[1] * c_in))
    out = []
    for i in range(0, n, chunk):
        gathered = padded[neighbours[i:i + chunk]].reshape(-1, neighbours.shape[1] * c_in)
        out.append(gathered @ w)
    y = torch.cat(out) if out else feats.new_zeros(0, c_out)
    return y + bias.to(y.dtype) if bias is not None else y


class _ConvParameters(nn.Module):
    """Holds `weight` (C_out, k, k, k, C_in) and `bias` under the published key names (`<name>.conv.*`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight.view(out_channels, -1), a=5 ** 0.5)


class SparseConv3d(nn.Module):
    """Submanifold convolution over a SparseTensor (TRELLIS' SparseConv3d with stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 backend: str = "auto"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SparseConv3d: kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.backend = backend
        self.conv = _ConvParameters(in_channels, out_channels, kernel_size, bias)

    def use_spconv(self, x: SparseTensor) -> bool:
        return self.backend == "spconv" or (self.backend == "auto" and x.feats.is_cuda and spconv_available())

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.use_spconv(x):
            if x.feats.is_cuda:
                return x.replace(self._spconv(x))
            with _one_thread():
                return x.replace(self._spconv(x))
        nbr = x.cached(f"neighbours{self.kernel_size}", lambda: neighbour_map(x.coords, self.kernel_size))
        return x.replace(submanifold_conv3d(x.feats, nbr, self.conv.weight, self.conv.bias))

    def _spconv(self, x: SparseTensor) -> Tensor:
        import spconv.pytorch as spconv
        spatial = (x.coords[:, 1:].max(0).values + 1).tolist()
        data = spconv.SparseConvTensor(x.feats.contiguous(), x.coords.int().contiguous(), spatial, x.batch_size)
        key = f"spconv_indices{self.kernel_size}"
        if (x.stride, key) in x.cache:
            data.indice_dict = x.cache[(x.stride, key)]
        # a functional call of spconv's module with our parameters (same layout): no copy of the weights. The module
        # is built once (kept outside the module tree, so the state_dict keys stay the published ones)
        module = self.__dict__.get("_spconv_module")
        if module is None:
            module = self.__dict__["_spconv_module"] = spconv.SubMConv3d(
                self.conv.weight.shape[4], self.conv.weight.shape[0], self.kernel_size,
                bias=self.conv.bias is not None, indice_key=key)
        params = {"weight": self.conv.weight, **({"bias": self.conv.bias} if self.conv.bias is not None else {})}
        out = torch.func.functional_call(module, params, (data,))
        x.cache[(x.stride, key)] = out.indice_dict
        return out.features
