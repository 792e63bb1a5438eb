"""A differentiable pure-PyTorch Gaussian rasterizer: the reference for gsplat's CUDA path.

It follows gsplat's "classic" rasterization rules so both paths agree: EWA projection with the
Jacobian's off-screen clamp, a 0.3 px^2 low-pass added to every 2D covariance, Gaussians sorted by
camera depth, alpha = min(0.999, opacity * exp(-sigma)), contributions below 1/255 skipped, and a pixel
finished once its transmittance would fall to 1e-4. Pixel centres are at (x + 0.5, y + 0.5).

Work is split into 16x16-pixel tiles, as gsplat does; a tile only sees the Gaussians whose 3-sigma box
reaches it, and many tiles are composited at once as one batched tensor computation.

As gsplat's options: colours may be SH coefficients evaluated per camera (`sh_degree`, spherical_harmonics.py),
and a depth image may be rendered beside the colours (`render_depth`, gsplat's render_mode "RGB+ED").
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..representations.rotation import quat_to_rotmat
from .spherical_harmonics import sh_to_colors

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, near_plane: float, far_plane: float, eps2d: float):
    """Projects N Gaussians into C cameras.

    Returns means2d (C, N, 2), conics (C, N, 3) = inverse 2D covariance (a, b, c), depths (C, N),
    radii (C, N) in pixels (0 where culled).
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mc = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]            # (C, N, 3)
    rs = quat_to_rotmat(quats) * scales[:, None, :]
    cov_w = rs @ rs.transpose(-1, -2)                                       # (N, 3, 3)
    cov_c = R[:, None] @ cov_w[None] @ R[:, None].transpose(-1, -2)         # (C, N, 3, 3)
    x, y, z = mc.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    z_safe = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z_safe * torch.minimum((width - cx) / fx + 0.3 * tan_x, torch.maximum(-(cx / fx + 0.3 * tan_x), x / z_safe))
    ty = z_safe * torch.minimum((height - cy) / fy + 0.3 * tan_y, torch.maximum(-(cy / fy + 0.3 * tan_y), y / z_safe))
    zero = torch.zeros_like(z)
    J = torch.stack([
        torch.stack([fx / z_safe, zero, -fx * tx / z_safe ** 2], -1),
        torch.stack([zero, fy / z_safe, -fy * ty / z_safe ** 2], -1),
    ], -2)                                                                  # (C, N, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)
    half = 0.5 * (a + c)
    v1 = half + torch.sqrt(torch.clamp(half * half - det, min=0.01))
    radii = torch.ceil(3.0 * torch.sqrt(v1)).detach()
    mx, my = means2d[..., 0].detach(), means2d[..., 1].detach()
    visible = ((z > near_plane) & (z < far_plane) & (det > 0)
               & (mx + radii > 0) & (mx - radii < width) & (my + radii > 0) & (my - radii < height))
    radii = torch.where(visible, radii, torch.zeros_like(radii))
    return means2d, conics, z, radii


def rasterize_reference(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                        viewmats: Tensor, Ks: Tensor, width: int, height: int,
                        backgrounds: Tensor | None = None, near_plane: float = 0.01,
                        far_plane: float = 1e10, eps2d: float = 0.3, tile_size: int = 16, tile_batch: int = 16,
                        sh_degree: int | None = None, render_depth: bool = False):
    """Renders C images.

    means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,), colors (N, D) or (C, N, D),
    viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds (C, D) or None.
    sh_degree: colors are SH coefficients (N, K, 3) or (C, N, K, 3), K >= (sh_degree + 1)^2, evaluated per camera
    from the camera-to-Gaussian direction (0.5 added, clamped at 0) as gsplat does.
    Returns colors (C, H, W, D) and alphas (C, H, W, 1); with render_depth also depths (C, H, W, 1), the expected
    camera z of the surface: sum_i w_i z_i / sum_i w_i over the blending weights w_i (0 where nothing is drawn).

    The image is cut into tile_size^2 tiles; each tile composites only the Gaussians whose 3-sigma box
    reaches it (in depth order), tile_batch tiles at a time as one batched tensor computation.
    """
    C = viewmats.shape[0]
    if sh_degree is not None:
        colors = sh_to_colors(sh_degree, colors, means, viewmats)
    elif colors.ndim == 2:
        colors = colors[None].expand(C, -1, -1)
    dev, dt = means.device, means.dtype
    means2d, conics, depths, radii = project_gaussians(means, quats, scales, viewmats, Ks, width, height,
                                                       near_plane, far_plane, eps2d)
    if render_depth:  # depth blended as one more channel, over a background of 0
        colors = torch.cat([colors, depths[..., None]], -1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], -1)
    D = colors.shape[-1]
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    ty, tx = torch.meshgrid(torch.arange(tiles_y, device=dev), torch.arange(tiles_x, device=dev), indexing="ij")
    tile_xy = torch.stack([tx.reshape(-1), ty.reshape(-1)], -1) * tile_size          # (n_tiles, 2) corner
    py, px = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev), indexing="ij")
    offsets = torch.stack([px.reshape(-1), py.reshape(-1)], -1).to(dt) + 0.5           # (P, 2) pixel centres
    out_rgb, out_alpha = [], []
    for ci in range(C):
        vis = torch.nonzero(radii[ci] > 0).squeeze(1)
        vis = vis[torch.argsort(depths[ci, vis], stable=True)]                        # front to back
        m2, con, rad = means2d[ci, vis], conics[ci, vis], radii[ci, vis]
        op, col = opacities[vis], colors[ci, vis]
        lo = ((m2.detach() - rad[:, None]) / tile_size).floor()                      # (n, 2) first tile touched
        hi = ((m2.detach() + rad[:, None]) / tile_size).floor()
        tiles = tile_xy // tile_size                                                   # (n_tiles, 2)
        hit = ((lo[None] <= tiles[:, None]) & (hi[None] >= tiles[:, None])).all(-1)    # (n_tiles, n)
        counts = hit.sum(1)
        # busy tiles first, so each batch pads to a similar count; empty tiles stay background
        order = torch.argsort(counts, descending=True)
        order = order[counts[order] > 0]
        rgb_t = torch.zeros(tile_xy.shape[0], offsets.shape[0], D, device=dev, dtype=dt)
        alpha_t = torch.zeros(tile_xy.shape[0], offsets.shape[0], 1, device=dev, dtype=dt)
        for t0 in range(0, order.shape[0], tile_batch):
            sel = order[t0:t0 + tile_batch]
            k = int(counts[sel[0]])
            # the first k hits of every tile, still in depth order (a stable sort puts hits first)
            idx = torch.sort((~hit[sel]).to(torch.int8), dim=1, stable=True).indices[:, :k]   # (b, k)
            valid = torch.arange(k, device=dev)[None] < counts[sel][:, None]          # (b, k)
            pix = tile_xy[sel].to(dt)[:, None, :] + offsets[None]                      # (b, P, 2)
            mm, cc = m2[idx], con[idx]                                                 # (b, k, 2|3)
            dx = pix[:, :, None, 0] - mm[:, None, :, 0]                                # (b, P, k)
            dy = pix[:, :, None, 1] - mm[:, None, :, 1]
            sigma = 0.5 * (cc[:, None, :, 0] * dx * dx + cc[:, None, :, 2] * dy * dy) + cc[:, None, :, 1] * dx * dy
            alpha = torch.clamp(op[idx][:, None, :] * torch.exp(-sigma), max=ALPHA_MAX)
            keep = valid[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_MIN)
            alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
            trans_incl = torch.cumprod(1.0 - alpha, dim=-1)
            trans_excl = torch.cat([torch.ones_like(trans_incl[..., :1]), trans_incl[..., :-1]], -1)
            weights = alpha * trans_excl * (trans_incl > TRANSMITTANCE_MIN)          # (b, P, k)
            rgb_t = rgb_t.index_put((sel,), torch.bmm(weights, col[idx]))
            alpha_t = alpha_t.index_put((sel,), weights.sum(-1, keepdim=True))
        rgb = _untile(rgb_t, tiles_y, tiles_x, tile_size)[:height, :width]
        alpha = _untile(alpha_t, tiles_y, tiles_x, tile_size)[:height, :width]
        if backgrounds is not None:
            rgb = rgb + (1.0 - alpha) * backgrounds[ci]
        out_rgb.append(rgb)
        out_alpha.append(alpha)
    rgb, alpha = torch.stack(out_rgb), torch.stack(out_alpha)
    if not render_depth:
        return rgb, alpha
    return rgb[..., :-1], alpha, rgb[..., -1:] / alpha.clamp(min=1e-10)


def _untile(t: Tensor, tiles_y: int, tiles_x: int, tile: int) -> Tensor:
    """(tiles_y * tiles_x, tile * tile, D) -> (tiles_y * tile, tiles_x * tile, D)."""
    D = t.shape[-1]
    return t.reshape(tiles_y, tiles_x, tile, tile, D).permute(0, 2, 1, 3, 4).reshape(tiles_y * tile, tiles_x * tile, D)
