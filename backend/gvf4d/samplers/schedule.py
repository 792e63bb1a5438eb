"""The discrete-time VP noise schedule in continuous time, as DPM-Solver treats trained discrete models.

x_t = alpha_t x_0 + sigma_t eps. From betas: log alpha_n = 0.5 cumsum log(1 - beta), computed in float64.
Steps whose half-log-SNR lambda falls below -5.1 are dropped (the cosine schedule's last steps), leaving N
steps placed at t_n = (n + 1) / N; log alpha(t) is piecewise linear in t between them. The network is fed
model time (t - 1/N) * 1000.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

LAMBDA_CLIP = -5.1


def cosine_betas(num_steps: int = 1000, max_beta: float = 0.999, s: float = 0.008) -> Tensor:
    """The improved-DDPM cosine schedule: beta_n = min(1 - abar((n+1)/N) / abar(n/N), max_beta), float64."""
    abar = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)],
                        dtype=torch.float64)


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation with linear extrapolation past both ends. xp ascending (K,), x any shape."""
    K = xp.shape[0]
    flat = x.reshape(-1)          # 1-D index tensors: a 0-dim one would index through .item(), a GPU sync per call
    i = torch.searchsorted(xp, flat.contiguous()).clamp(1, K - 1) - 1
    x0, x1, y0, y1 = xp[i], xp[i + 1], fp[i], fp[i + 1]
    return (y0 + (flat - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class DiscreteVPSchedule:
    def __init__(self, betas: Tensor, dtype: torch.dtype = torch.float32):
        log_alphas = 0.5 * torch.log(1 - betas.double()).cumsum(0)
        lambdas = log_alphas - 0.5 * torch.log(1 - torch.exp(2 * log_alphas))
        keep = int((lambdas >= LAMBDA_CLIP).sum())   # lambda decreases with n: drop the tail below the clip
        self.log_alpha_array = log_alphas[:keep].to(dtype)
        self.total_N = keep
        self.t_array = torch.linspace(0.0, 1.0, keep + 1)[1:].to(dtype)
        self.T = 1.0
        self._arrays: dict[torch.device, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def _on(self, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(t_array, log_alpha_array, and both flipped) on `device`, copied once."""
        if device not in self._arrays:
            t, la = self.t_array.to(device), self.log_alpha_array.to(device)
            self._arrays[device] = (t, la, t.flip(0), la.flip(0))
        return self._arrays[device]

    @classmethod
    def cosine(cls, num_steps: int = 1000) -> "DiscreteVPSchedule":
        return cls(cosine_betas(num_steps))

    def model_time(self, t: Tensor) -> Tensor:
        return (t - 1.0 / self.total_N) * 1000.0

    def log_alpha(self, t: Tensor) -> Tensor:
        t_arr, la_arr, _, _ = self._on(t.device)
        return interp(t, t_arr, la_arr)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def inverse_lambda(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        _, _, t_flip, la_flip = self._on(lam.device)
        return interp(log_alpha, la_flip, t_flip)
