"""Canonical Gaussians in the raw parameter space of GVF's Gaussian decoder, and the application of the
motion VAE's per-frame deltas exactly as the published renderer applies them.

Raw parameters (published GaussianModel with softplus scales, configs/diffusion.yml):
    scale    = sqrt(softplus(raw_scale + inv_softplus(0.004))^2 + 0.0009^2)
    rotation = normalize(raw_rotation + [1, 0, 0, 0])
    opacity  = sigmoid(raw_opacity + logit(0.1))
Deltas (T, N, 14) are laid out xyz(0:3), scale(3:6), rotation(6:10), f_dc(10:13), opacity(13) and add to
xyz, raw_scale, raw_rotation, f_dc, raw_opacity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .gaussians import AnimatedGaussians, Gaussians

SCALING_BIAS = 0.004
OPACITY_BIAS = 0.1
MIN_KERNEL_SIZE = 0.0009  # the decoder's 3D filter
_ROT_BIAS = (1.0, 0.0, 0.0, 0.0)


def inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def _scale_bias(device) -> Tensor:
    return inverse_softplus(torch.tensor(SCALING_BIAS, device=device))


def _opacity_bias() -> float:
    return math.log(OPACITY_BIAS / (1 - OPACITY_BIAS))


@dataclass
class GVFGaussians:
    """xyz (N, 3) world; raw_scale (N, 3); raw_rotation (N, 4) (quaternion minus [1, 0, 0, 0], not normalised);
    features_dc (N, 3); raw_opacity (N,)."""

    xyz: Tensor
    raw_scale: Tensor
    raw_rotation: Tensor
    features_dc: Tensor
    raw_opacity: Tensor

    def __len__(self) -> int:
        return self.xyz.shape[0]

    def to(self, device) -> "GVFGaussians":
        return GVFGaussians(**{k: v.to(device) for k, v in self.__dict__.items()})

    @classmethod
    def from_gaussians(cls, g: Gaussians) -> "GVFGaussians":
        """Inverts the activations (scales below the 3D filter's kernel are clamped just above it)."""
        s = torch.sqrt(torch.clamp(g.scales.square() - MIN_KERNEL_SIZE ** 2, min=1e-12))
        rot_bias = torch.tensor(_ROT_BIAS, device=g.quats.device)
        return cls(xyz=g.means, raw_scale=inverse_softplus(s) - _scale_bias(g.means.device),
                   raw_rotation=g.quats - rot_bias, features_dc=g.sh_dc,
                   raw_opacity=torch.logit(g.opacities.clamp(1e-6, 1 - 1e-6)) - _opacity_bias())

    def activated(self, delta: Tensor | None = None) -> dict[str, Tensor]:
        """Attributes with an optional delta (..., N, 14) added in raw space: means, scales, quats, opacities, sh_dc."""
        zero = self.xyz.new_zeros(self.xyz.shape[0], 14)
        d = zero if delta is None else delta
        rot_bias = torch.tensor(_ROT_BIAS, device=self.xyz.device)
        scale = F.softplus(self.raw_scale + _scale_bias(self.xyz.device) + d[..., 3:6])
        return {
            "means": self.xyz + d[..., 0:3],
            "scales": torch.sqrt(scale.square() + MIN_KERNEL_SIZE ** 2),
            "quats": F.normalize(self.raw_rotation + rot_bias + d[..., 6:10], dim=-1),
            "sh_dc": self.features_dc + d[..., 10:13],
            "opacities": torch.sigmoid(self.raw_opacity + _opacity_bias() + d[..., 13]),
        }

    def to_gaussians(self) -> Gaussians:
        return Gaussians(**self.activated())

    def rows(self) -> Tensor:
        """(N, 14) in the published canonical layout: xyz, f_dc, opacity, scale, rotation (all activated)."""
        a = self.activated()
        return torch.cat([a["means"], a["sh_dc"], a["opacities"][:, None], a["scales"], a["quats"]], dim=-1)

    def apply_deltas(self, deltas: Tensor) -> AnimatedGaussians:
        """deltas (T, N, 14) -> the animated splat with every attribute tracked."""
        a = self.activated(deltas)
        return AnimatedGaussians(canonical=self.to_gaussians(), positions=a["means"], scales=a["scales"],
                                 quats=a["quats"], opacities=a["opacities"], sh_dc=a["sh_dc"])
