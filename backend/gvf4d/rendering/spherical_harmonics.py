"""View-dependent colour from spherical-harmonics coefficients, as gsplat evaluates it.

The real SH basis of 3DGS, bands 0-3, in gsplat's formulation (Sloan, "Efficient Spherical Harmonic Evaluation",
JCGT 2013) and with its constants. Coefficients are (..., K, 3) with K >= (degree + 1)^2, band by band and
m = -l..l within a band; coefficient 0 is the DC term a `.gvf4d` file stores as `sh_dc`, coefficients 1.. are its
`sh_rest`. The colour seen along a direction is max(0.5 + sum_k coeffs[k] * Y_k(dir), 0), dir the unit vector
from the camera centre to the Gaussian.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..representations import SH_C0

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_degree_of(num_bases: int) -> int:
    """The degree whose full set of bands has num_bases coefficients; ValueError if there is none up to 3."""
    for degree in range(MAX_SH_DEGREE + 1):
        if num_sh_bases(degree) == num_bases:
            return degree
    raise ValueError(f"{num_bases} SH coefficients per colour channel is not a full set of bands of degree "
                     f"0..{MAX_SH_DEGREE} (1, 4, 9 or 16)")


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """dirs (..., 3) of any length -> (..., (degree + 1)^2) basis values at the normalised directions."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree {degree} is not in 0..{MAX_SH_DEGREE}")
    bases = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = torch.nn.functional.normalize(dirs, dim=-1).unbind(-1)
        bases += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        tmp0b = -1.092548430592079 * z
        c1, s1 = x * x - y * y, 2.0 * x * y
        bases += [0.5462742152960395 * s1, tmp0b * y, 0.9461746957575601 * z2 - 0.3153915652525201, tmp0b * x,
                  0.5462742152960395 * c1]
    if degree >= 3:
        tmp0c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp1b = 1.445305721320277 * z
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        bases += [-0.5900435899266435 * s2, tmp1b * s1, tmp0c * y, z * (1.865881662950577 * z2 - 1.119528997770346),
                  tmp0c * x, tmp1b * c1, -0.5900435899266435 * c2]
    return torch.stack(bases, -1)


def sh_to_colors(degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """Colours of N Gaussians as C cameras see them.

    degree: the bands used (0..3); coeffs (N, K, 3) or (C, N, K, 3) with K >= (degree + 1)^2; means (N, 3);
    viewmats (C, 4, 4) world->camera. Returns (C, N, 3) = max(0.5 + SH(dir), 0), clamped at 0 as gsplat does.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients per channel, got {coeffs.shape[-2]}")
    campos = torch.linalg.inv(viewmats)[:, :3, 3]                             # (C, 3) camera centres
    dirs = means[None] - campos[:, None]                                      # (C, N, 3) camera -> Gaussian
    bases = sh_bases(degree, dirs)                                            # (C, N, k)
    colors = (bases[..., None] * coeffs[..., :k, :]).sum(-2)                  # (C, N, 3)
    return torch.clamp_min(colors + 0.5, 0.0)
