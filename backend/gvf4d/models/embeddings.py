"""Sinusoidal embeddings of diffusion time and of 3D positions."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) possibly fractional times -> (B, dim) as [cos(t f), sin(t f)] with f = max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size).to(self.mlp[0].weight.dtype))


def xyz_sincos_embedding(xyz: Tensor, channels: int) -> Tensor:
    """(..., 3) positions -> (..., channels): per coordinate [sin(x f), cos(x f)] with
    f_i = 10000^(-i/F), F = channels // 6, coordinates concatenated, zero-padded to `channels`."""
    n_freq = channels // 3 // 2
    freqs = 1.0 / (10000 ** (torch.arange(n_freq, dtype=torch.float32, device=xyz.device) / n_freq))
    args = xyz[..., None].float() * freqs                                  # (..., 3, F)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1).flatten(-2)  # (..., 6F)
    if emb.shape[-1] < channels:
        emb = torch.cat([emb, emb.new_zeros(*emb.shape[:-1], channels - emb.shape[-1])], dim=-1)
    return emb


class PointFourierEmbed(nn.Module):
    """The motion VAE's point embedding: per coordinate [sin(x w), cos(x w)], w_i = 10000^(-2i/D'),
    D' = dim // 3 // 2 frequencies. `omega` is a stored buffer (it is in the published checkpoints)."""

    def __init__(self, dim: int):
        super().__init__()
        assert dim % 3 == 0
        n = dim // 3 // 2
        omega = torch.arange(n, dtype=torch.float64) / (n / 2.0)
        self.register_buffer("omega", 1.0 / 10000 ** omega)

    def forward(self, xyz: Tensor) -> Tensor:
        """(..., 3) -> (..., dim) in xyz's dtype."""
        args = xyz[..., None] * self.omega.to(xyz.dtype)                   # (..., 3, n)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).flatten(-2)
