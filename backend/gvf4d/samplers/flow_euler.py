"""TRELLIS' rectified-flow sampler: Euler steps on the predicted velocity from t = 1 (noise) to t = 0, with
classifier-free guidance applied only while t lies in the guidance interval.

    x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps,   v = model(x_t, 1000 t, cond)
    times  t_i = s u_i / (1 + (s - 1) u_i),  u = linspace(1, 0, steps + 1),  s = rescale_t
    step   x <- x - (t_i - t_{i+1}) v_guided
    guided v = (1 + w) v(cond) - w v(neg_cond) inside [lo, hi], else v(cond)

The conditional and unconditional predictions come from one batched call: `velocity` receives x repeated
twice along dim 0 and [cond; neg_cond] (the published code makes two calls; the results agree to rounding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..progress import Progress

# velocity(x, t_model (B,), cond (B, L, C)) -> v shaped like x; x is (B, ...) or the rows (N, C) of a sparse tensor
Velocity = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class FlowEulerSampler:
    sigma_min: float = 1e-5

    @staticmethod
    def times(steps: int, rescale_t: float = 1.0) -> np.ndarray:
        u = np.linspace(1, 0, steps + 1)
        return rescale_t * u / (1 + (rescale_t - 1) * u)

    @torch.no_grad()
    def sample(self, velocity: Velocity, noise: Tensor, cond: Tensor, neg_cond: Optional[Tensor] = None,
               steps: int = 50, rescale_t: float = 1.0, cfg_strength: float = 0.0,
               cfg_interval: Sequence[float] = (0.0, 1.0), progress: Optional[Progress] = None,
               stage: str = "sampling") -> Tensor:
        """noise (B, ...) or (N, C); cond, neg_cond (B, L, C) -> the sample at t = 0, shaped like noise."""
        x = noise
        t_seq = self.times(steps, rescale_t)
        for i in range(steps):
            t, t_prev = float(t_seq[i]), float(t_seq[i + 1])
            guided = neg_cond is not None and cfg_strength != 0 and cfg_interval[0] <= t <= cfg_interval[1]
            if guided:
                c = torch.cat([cond, neg_cond])
                v_cond, v_neg = velocity(torch.cat([x, x]), torch.full((c.shape[0],), 1000 * t, device=x.device), c
                                         ).chunk(2)
                v = (1 + cfg_strength) * v_cond - cfg_strength * v_neg
            else:
                v = velocity(x, torch.full((cond.shape[0],), 1000 * t, device=x.device), cond)
            x = x - (t - t_prev) * v
            if progress:
                progress(stage, (i + 1) / steps)
        return x
