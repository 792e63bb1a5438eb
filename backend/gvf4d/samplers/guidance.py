"""The published three-way classifier-free guidance over a v-prediction network, as a noise predictor.

Branches: fully unconditional (no frame features, no canonical Gaussians), unconditional (canonical
Gaussians, no frame features), conditional (both). The noises combine as
    eps = eps_full_uncond + g1 (eps_uncond - eps_full_uncond) + g2 (eps_cond - eps_uncond);
with g1 = g2 = 1 that is eps_cond and only the conditional branch is evaluated. For one sample the branches'
network call gets the latent and time once, the conditions batched (network(x (1, ...), t (1,), **cond (3, ...))):
the network broadcasts them over the conditions, so what depends on the latent alone can run once (the GVF DiT's
first self-attentions); for several samples it gets them repeated per branch.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .schedule import DiscreteVPSchedule


def _expand(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(-1, *([1] * (ndim - 1)))


class ThreeWayGuidance:
    """noise(x (B, ...), t (scalar)) for DPM-Solver from network(x, model_time (B,), **cond) -> v.
    prepare: applied once to the branches' batched conditions before sampling (network(x, t, **prepare(cond)));
    for work that does not change between steps, such as the DiT's conditioning. With guidance and one sample
    (B = 1) only the branches' keys (image_key, static_key) are batched, the network broadcasts x, t and the
    other keys over them (module docstring)."""

    def __init__(self, network: Callable[..., Tensor], schedule: DiscreteVPSchedule, cond: dict[str, Tensor],
                 guidance_scale: float = 1.0, guidance_scale2: float = 1.0,
                 image_key: str = "cond_images", static_key: str = "static_latent",
                 prepare: Optional[Callable[[dict[str, Tensor]], dict[str, Any]]] = None):
        self.network, self.schedule = network, schedule
        self.g1, self.g2 = guidance_scale, guidance_scale2
        self.guided = not (guidance_scale == 1.0 and guidance_scale2 == 1.0)
        self.shared = self.guided and cond[image_key].shape[0] == 1
        if self.guided:
            uncond = {**cond, image_key: torch.zeros_like(cond[image_key])}
            full_uncond = {**uncond, static_key: torch.zeros_like(cond[static_key])}
            branched = lambda k: k in (image_key, static_key) or not self.shared     # noqa: E731
            self.cond = {k: torch.cat([full_uncond[k], uncond[k], cond[k]]) if branched(k) else cond[k] for k in cond}
        else:
            self.cond = cond
        if prepare is not None:
            self.cond = prepare(self.cond)
        self.rows_evaluated = 0

    def noise(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, ...), t: a time on x's device (0-d or (B,)), or a 0-d time on the host (the multistep solver's
        grid): its schedule values are then computed on the host and the network's time is filled on x's device
        (no copy, no synchronisation) -> eps (B, ...)."""
        reps = 3 if self.guided else 1
        x_in = torch.cat([x] * reps) if reps > 1 and not self.shared else x
        rows = x_in.shape[0]
        if t.device == x.device:
            t_in = t.reshape(-1).expand(rows)
            model_time = self.schedule.model_time(t_in)
            alpha, sigma = (_expand(f(t_in), x.ndim) for f in (self.schedule.alpha, self.schedule.sigma))
        elif t.ndim == 0:
            model_time = torch.full((rows,), float(self.schedule.model_time(t)), device=x.device, dtype=t.dtype)
            alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)       # 0-d host tensors: scalars on x
        else:
            raise ValueError(f"ThreeWayGuidance.noise: a time on {t.device} for x on {x.device} must be 0-d")
        v = self.network(x_in, model_time, **self.cond)
        self.rows_evaluated += reps * x.shape[0]
        eps = alpha * v.to(x.dtype) + sigma * x_in
        if not self.guided:
            return eps
        full_uncond, uncond, cond = eps.chunk(3)
        return full_uncond + self.g1 * (uncond - full_uncond) + self.g2 * (cond - uncond)
