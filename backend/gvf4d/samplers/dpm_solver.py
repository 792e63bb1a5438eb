"""DPM-Solver++ (data prediction) of order 1-2: multistep on a fixed time grid, or adaptive step size.

Solves the diffusion ODE from t_start (noise) to t_end with the exponential-integrator updates of
Lu et al. 2022 ("DPM-Solver++"), in the "dpmsolver" flavour of the second-order correction, as the
published GVF sampler runs it. `noise_fn(x, t)` is the (guided) noise prediction at scalar time t.

Both solvers keep their times on the host (the multistep grid; the adaptive solver's step control, which reads
one error estimate back per step): the schedule's values (interpolations, exponentials) are computed there, 0-d
tensors that the device's operations on x take as scalars, without copies or synchronisation. Between two network
evaluations the device then runs only the kernels of the update. `noise_fn(x, t)` gets such a 0-d host time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from .schedule import DiscreteVPSchedule

NoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SolverStats:
    network_evaluations: int = 0
    accepted_steps: int = 0
    rejected_steps: int = 0


class DPMSolverPP:
    def __init__(self, schedule: DiscreteVPSchedule):
        self.schedule = schedule

    def data_prediction(self, noise_fn: NoiseFn, x: Tensor, t: Tensor, stats: SolverStats) -> Tensor:
        stats.network_evaluations += 1
        eps = noise_fn(x, t)
        return (x - self.schedule.sigma(t) * eps) / self.schedule.alpha(t)

    # -- single updates from s to t; x0_s is the data prediction at (x, s)
    def first_order(self, x: Tensor, s: Tensor, t: Tensor, x0_s: Tensor) -> Tensor:
        sch = self.schedule
        h = sch.lambda_(t) - sch.lambda_(s)
        return sch.sigma(t) / sch.sigma(s) * x - sch.alpha(t) * torch.expm1(-h) * x0_s

    def multistep_second_order(self, x: Tensor, x0_prev: Tensor, x0_last: Tensor, t_prev: Tensor, t_last: Tensor,
                               t: Tensor) -> Tensor:
        """From t_last to t using the data predictions at t_prev and t_last."""
        sch = self.schedule
        lam_prev, lam_last, lam_t = sch.lambda_(t_prev), sch.lambda_(t_last), sch.lambda_(t)
        h = lam_t - lam_last
        r = (lam_last - lam_prev) / h
        d1 = (x0_last - x0_prev) / r
        phi = torch.expm1(-h)
        a_t = sch.alpha(t)
        return sch.sigma(t) / sch.sigma(t_last) * x - a_t * phi * x0_last - 0.5 * (a_t * phi) * d1

    def singlestep_second_order(self, noise_fn: NoiseFn, x: Tensor, s: Tensor, t: Tensor, x0_s: Tensor,
                                stats: SolverStats, r1: float = 0.5) -> Tensor:
        sch = self.schedule
        lam_s, lam_t = sch.lambda_(s), sch.lambda_(t)
        h = lam_t - lam_s
        s1 = sch.inverse_lambda(lam_s + r1 * h)
        x_s1 = sch.sigma(s1) / sch.sigma(s) * x - sch.alpha(s1) * torch.expm1(-r1 * h) * x0_s
        x0_s1 = self.data_prediction(noise_fn, x_s1, s1, stats)
        a_t, phi = sch.alpha(t), torch.expm1(-h)
        return sch.sigma(t) / sch.sigma(s) * x - a_t * phi * x0_s - 0.5 / r1 * (a_t * phi) * (x0_s1 - x0_s)

    # -- whole solves
    def sample(self, noise_fn: NoiseFn, x: Tensor, steps: int = 20, t_start: float = 1.0, t_end: float = 1e-3,
               order: int = 2, method: Literal["multistep", "adaptive"] = "multistep",
               lower_order_final: bool = True, atol: float = 0.0078, rtol: float = 0.05,
               progress: Optional[Callable[[float], None]] = None) -> tuple[Tensor, SolverStats]:
        """x: noise (B, ...) at t_start. Returns the sample at t_end and the solver's counts.
        progress(fraction) is called after every step (the adaptive solver reports progress in log-SNR)."""
        stats = SolverStats()
        with torch.no_grad():
            if method == "multistep":
                x = self._multistep(noise_fn, x, steps, t_start, t_end, order, lower_order_final, stats, progress)
            elif method == "adaptive":
                x = self._adaptive(noise_fn, x, t_start, t_end, order, atol, rtol, stats, progress)
            else:
                raise ValueError(f"unknown DPM-Solver method {method!r}: use 'multistep' or 'adaptive'")
        return x, stats

    def _multistep(self, noise_fn, x, steps, t_start, t_end, order, lower_order_final, stats, progress):
        if order not in (1, 2):
            raise ValueError(f"DPM-Solver++ order {order} not supported: use 1 or 2")
        if steps < order:
            raise ValueError(f"{steps} steps are fewer than the order {order}")
        ts = torch.linspace(t_start, t_end, steps + 1)   # the time-uniform grid, on the host (module docstring)
        hist_t, hist_x0 = [ts[0]], [self.data_prediction(noise_fn, x, ts[0], stats)]
        for step in range(1, steps + 1):
            t = ts[step]
            step_order = min(order, step)
            if lower_order_final and steps < 10:
                step_order = min(step_order, steps + 1 - step)
            if step_order == 1:
                x = self.first_order(x, hist_t[-1], t, hist_x0[-1])
            else:
                x = self.multistep_second_order(x, hist_x0[-2], hist_x0[-1], hist_t[-2], hist_t[-1], t)
            stats.accepted_steps += 1
            if step < steps:
                hist_t, hist_x0 = (hist_t + [t])[-order:], (hist_x0 + [self.data_prediction(noise_fn, x, t, stats)])[-order:]
            if progress:
                progress(step / steps)
        return x

    def _adaptive(self, noise_fn, x, t_start, t_end, order, atol, rtol, stats, progress,
                  h_init: float = 0.05, theta: float = 0.9, t_err: float = 1e-5):
        if order != 2:
            raise ValueError("the adaptive DPM-Solver++ is implemented for order 2 (as published)")
        sch = self.schedule
        s = torch.tensor(t_start, dtype=x.dtype)          # the step control on the host (module docstring)
        lam_s = sch.lambda_(s)
        lam_start, lam_end = lam_s.clone(), sch.lambda_(torch.full_like(s, t_end))
        h = torch.full_like(s, h_init)
        x_prev = x
        while torch.abs(s - t_end) > t_err:
            t = sch.inverse_lambda(lam_s + h)
            x0_s = self.data_prediction(noise_fn, x, s, stats)
            x_lower = self.first_order(x, s, t, x0_s)
            x_higher = self.singlestep_second_order(noise_fn, x, s, t, x0_s, stats)
            tol = torch.maximum(torch.full_like(x, atol), rtol * torch.maximum(x_lower.abs(), x_prev.abs()))
            err = ((x_higher - x_lower) / tol).reshape(x.shape[0], -1).square().mean(-1).sqrt().max().cpu()
            if err <= 1.0:
                x, s, x_prev = x_higher, t, x_lower
                lam_s = sch.lambda_(s)
                stats.accepted_steps += 1
                if progress:
                    progress(float((lam_s - lam_start) / (lam_end - lam_start)))
            else:
                stats.rejected_steps += 1
            h = torch.minimum(theta * h * torch.float_power(err, -1.0 / order).float(), lam_end - lam_s)
        return x
