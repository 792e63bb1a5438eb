"""The sRGB transfer function (IEC 61966-2-1) between display values and scene-linear light.

Splat colours (SH DC and bands) are display values, as 3DGS trains them; Blender composites and EXR files hold
scene-linear Rec.709 values. Values above 1 follow the curve's power segment, so neither function clips.
"""
from __future__ import annotations

import torch
from torch import Tensor


def srgb_to_linear(x: Tensor) -> Tensor:
    x = x.clamp_min(0.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    x = x.clamp_min(0.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
