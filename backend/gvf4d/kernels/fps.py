"""Farthest point sampling, vectorised over the batch (no torch_cluster).

Matches torch_cluster.fps(random_start=False): start at each set's first point, then repeatedly take the
point farthest (squared Euclidean, ties to the lowest index) from those already taken.

Each step is a few small kernels, so on CUDA the loop is bound by kernel launches; there, chunks of steps are
captured once in a CUDA graph and replayed (same kernels, same result; `use_graph=False` runs the plain loop).
"""
from __future__ import annotations

import torch
from torch import Tensor


GRAPH_CHUNK = 128   # steps per captured graph


def farthest_point_sampling(points: Tensor, k: int, lengths: Tensor | None = None, use_graph: bool = True) -> Tensor:
    """points (B, N, D) (rows past lengths[b] are padding) -> indices (B, k) in selection order."""
    B, N, _ = points.shape
    if lengths is None:
        lengths = torch.full((B,), N, device=points.device)
    if (lengths < k).any():
        raise ValueError(f"farthest point sampling of {k} points from sets of {lengths.min().item()}")
    valid = torch.arange(N, device=points.device)[None] < lengths[:, None]
    # padding rows start (and stay, distances being >= 0) at -1, below every real row
    min_dist = torch.where(valid, torch.full((B, N), float("inf"), device=points.device, dtype=points.dtype),
                           torch.full((B, N), -1.0, device=points.device, dtype=points.dtype))
    current = torch.zeros(B, dtype=torch.long, device=points.device)
    batch = torch.arange(B, device=points.device)
    if use_graph and points.is_cuda and k > GRAPH_CHUNK:
        return _graphed_steps(points, k, min_dist, current, batch)
    idx = torch.zeros(B, k, dtype=torch.long, device=points.device)
    for i in range(k):
        _step(points, batch, min_dist, current, idx[:, i])
    return idx


def _step(points: Tensor, batch: Tensor, min_dist: Tensor, current: Tensor, out: Tensor) -> None:
    """One selection, in place: record `current` in out, fold its distances into min_dist, pick the next."""
    out.copy_(current)
    d = (points - points[batch, current][:, None]).pow(2).sum(-1)
    torch.minimum(min_dist, d, out=min_dist)
    current.copy_(min_dist.argmax(dim=1))


def _graphed_steps(points: Tensor, k: int, min_dist: Tensor, current: Tensor, batch: Tensor) -> Tensor:
    B = points.shape[0]
    chunk = torch.zeros(B, GRAPH_CHUNK, dtype=torch.long, device=points.device)
    start_dist, start_current = min_dist.clone(), current.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                       # warm-up outside the capture, as CUDA graphs require
        for j in range(GRAPH_CHUNK):
            _step(points, batch, min_dist, current, chunk[:, j])
    torch.cuda.current_stream().wait_stream(side)
    min_dist.copy_(start_dist)
    current.copy_(start_current)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for j in range(GRAPH_CHUNK):
            _step(points, batch, min_dist, current, chunk[:, j])
    idx = []
    for _ in range(-(-k // GRAPH_CHUNK)):              # extra steps past k do not change the first k picks
        graph.replay()
        idx.append(chunk.clone())
    return torch.cat(idx, dim=1)[:, :k]
