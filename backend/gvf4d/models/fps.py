"""Farthest point sampling, vectorised over the batch (no torch_cluster).

Matches torch_cluster.fps(random_start=False): start at each set's first point, then repeatedly take the
point farthest (squared Euclidean, ties to the lowest index) from those already taken.
"""
from __future__ import annotations

import torch
from torch import Tensor


def farthest_point_sampling(points: Tensor, k: int, lengths: Tensor | None = None) -> Tensor:
    """points (B, N, D) (rows past lengths[b] are padding) -> indices (B, k) in selection order."""
    B, N, _ = points.shape
    if lengths is None:
        lengths = torch.full((B,), N, device=points.device)
    if (lengths < k).any():
        raise ValueError(f"farthest point sampling of {k} points from sets of {lengths.min().item()}")
    valid = torch.arange(N, device=points.device)[None] < lengths[:, None]
    min_dist = torch.where(valid, torch.full((B, N), float("inf"), device=points.device, dtype=points.dtype),
                           torch.full((B, N), -1.0, device=points.device, dtype=points.dtype))
    idx = torch.zeros(B, k, dtype=torch.long, device=points.device)
    batch = torch.arange(B, device=points.device)
    current = torch.zeros(B, dtype=torch.long, device=points.device)
    for i in range(k):
        idx[:, i] = current
        d = (points - points[batch, current][:, None]).pow(2).sum(-1)
        min_dist = torch.where(valid, torch.minimum(min_dist, d), min_dist)
        current = min_dist.argmax(dim=1)
    return idx
