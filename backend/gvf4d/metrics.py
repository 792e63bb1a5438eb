"""Image metrics on (..., H, W, C) tensors in [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per image (leading dims kept), in dB."""
    mse = (a - b).square().flatten(-3).mean(-1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor, window: int = 11) -> Tensor:
    """Mean SSIM per image (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5); a, b (..., H, W, C)."""
    lead = a.shape[:-3]
    H, W, C = a.shape[-3:]
    x = a.reshape(-1, H, W, C).permute(0, 3, 1, 2)
    y = b.reshape(-1, H, W, C).permute(0, 3, 1, 2)
    w = _gaussian_window(window, 1.5, a.device, a.dtype).expand(C, 1, window, window)
    conv = lambda t: F.conv2d(t, w, padding=window // 2, groups=C)
    mx, my = conv(x), conv(y)
    sxx, syy, sxy = conv(x * x) - mx * mx, conv(y * y) - my * my, conv(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(-1).reshape(lead)
