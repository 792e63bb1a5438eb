"""One rasterizer interface over gsplat (CUDA) and the PyTorch reference."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..representations import Gaussians
from .cameras import Cameras
from .rasterize_reference import rasterize_reference
from .spherical_harmonics import sh_to_colors

Backend = Literal["auto", "gsplat", "reference"]


@functools.cache
def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401  (availability check)
    except Exception:
        return False
    return torch.cuda.is_available()


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, backgrounds: Tensor | None = None,
              backend: Backend = "auto", near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
              sh_degree: int | None = None, render_depth: bool = False):
    """Shapes and options as rasterize_reference: returns colors (C, H, W, D), alphas (C, H, W, 1) and, with
    render_depth, depths (C, H, W, 1) (expected depth, gsplat's render_mode "RGB+ED")."""
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and gsplat_available())
    if use_gsplat:
        from gsplat import rasterization
        if sh_degree is not None and colors.ndim == 4:  # per-camera coefficients: not every gsplat version takes them
            colors, sh_degree = sh_to_colors(sh_degree, colors, means, viewmats), None
        out, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                      near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
                                      backgrounds=backgrounds, packed=False, rasterize_mode="classic",
                                      render_mode="RGB+ED" if render_depth else "RGB")
        return (out[..., :-1], alpha, out[..., -1:]) if render_depth else (out, alpha)
    return rasterize_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                               backgrounds=backgrounds, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
                               sh_degree=sh_degree, render_depth=render_depth)


@dataclass
class RenderOutput:
    rgb: Tensor    # (C, H, W, 3)
    alpha: Tensor  # (C, H, W, 1)


def render_gaussians(g: Gaussians, cameras: Cameras, background=(1.0, 1.0, 1.0), backend: Backend = "auto") -> RenderOutput:
    """Renders a splat (colour from its SH DC term) into every camera over a solid background."""
    cams = cameras.to(g.means.device)
    bg = torch.tensor(background, dtype=g.means.dtype, device=g.means.device).expand(len(cams), 3)
    rgb, alpha = rasterize(g.means, g.quats, g.scales, g.opacities, g.rgb, cams.viewmats, cams.Ks,
                           cams.width, cams.height, backgrounds=bg, backend=backend)
    return RenderOutput(rgb=rgb, alpha=alpha)
