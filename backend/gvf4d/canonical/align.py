"""Fitting a canonical splat to the footage's first frame: a uniform scale and an offset, first from the
silhouettes' boxes (centre and size), then refined by gradient descent on the photometric and silhouette
difference of the render from the footage camera.

(The published pipeline also searches the azimuth with CLIP; that search belongs to the canonical stage.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..rendering import Cameras, rasterize
from ..representations import Gaussians


@dataclass
class SilhouetteAlignment:
    """aligned = original * scale + offset (world units)."""

    scale: float
    offset: tuple[float, float, float]

    def apply(self, g: Gaussians) -> Gaussians:
        off = torch.tensor(self.offset, dtype=g.means.dtype, device=g.means.device)
        return replace(g, means=g.means * self.scale + off, scales=g.scales * self.scale)

    def invert_points(self, p: Tensor) -> Tensor:
        return (p - torch.tensor(self.offset, dtype=p.dtype, device=p.device)) / self.scale

    def inverse(self) -> "SilhouetteAlignment":
        """The alignment that undoes this one: original = aligned * (1 / scale) - offset / scale."""
        return SilhouetteAlignment(1.0 / self.scale, tuple(-o / self.scale for o in self.offset))

    def to_json(self) -> dict:
        return {"scale": self.scale, "offset": list(self.offset), "meaning": "aligned = original * scale + offset"}


def silhouette_boxes(alpha: Tensor) -> Tensor:
    """(C, H, W) -> (C, 4) centre x, centre y, size (pixels), valid (1/0) of alpha > 0.5."""
    C, H, W = alpha.shape
    m = alpha > 0.5
    xs = torch.arange(W, device=alpha.device, dtype=alpha.dtype)
    ys = torch.arange(H, device=alpha.device, dtype=alpha.dtype)
    anyx, anyy = m.any(1), m.any(2)
    big = torch.tensor(1e9, device=alpha.device, dtype=alpha.dtype)
    x0 = torch.where(anyx, xs, big).min(1).values
    x1 = torch.where(anyx, xs, -big).max(1).values + 1
    y0 = torch.where(anyy, ys, big).min(1).values
    y1 = torch.where(anyy, ys, -big).max(1).values + 1
    valid = anyx.any(1)
    size = torch.maximum(x1 - x0, y1 - y0)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, torch.where(valid, size, torch.ones_like(size)), valid.to(alpha.dtype)], -1)


def _box(alpha: Tensor) -> tuple[float, float, float]:
    """(centre x, centre y, size) of one silhouette (H, W)."""
    cx, cy, size, valid = silhouette_boxes(alpha[None])[0].tolist()
    if not valid:
        raise ValueError("empty silhouette")
    return cx, cy, size


def align_to_footage(g: Gaussians, rgb: Tensor, alpha: Tensor, camera: Cameras, box_iterations: int = 3,
                     refine_iterations: int = 40, lr: float = 5e-3) -> SilhouetteAlignment:
    """rgb (H, W, 3) over white and alpha (H, W) in [0, 1]: the footage's first frame as seen by `camera`."""
    dev = g.means.device
    camera = camera.to(dev)
    init = align_to_silhouette(g, alpha, camera, box_iterations)
    log_scale = torch.zeros((), device=dev, requires_grad=True)
    offset = torch.tensor(init.offset, device=dev, requires_grad=True)
    centre = init.apply(g).means.mean(0).detach()
    opt = torch.optim.Adam([{"params": [offset], "lr": lr}, {"params": [log_scale], "lr": lr}])
    white = torch.ones(1, 3, device=dev)
    for _ in range(refine_iterations):
        k = log_scale.exp()
        means = (g.means * init.scale + offset - centre) * k + centre
        r, a = rasterize(means, g.quats, g.scales * init.scale * k, g.opacities, g.rgb, camera.viewmats, camera.Ks,
                         camera.width, camera.height, backgrounds=white)
        loss = (r[0] - rgb).abs().mean() + (a[0, ..., 0] - alpha).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    k = float(log_scale.detach().exp())
    # (orig * s0 + off - centre) * k + centre = orig * (s0 k) + (off - centre) * k + centre
    return SilhouetteAlignment(init.scale * k, tuple(((offset.detach() - centre) * k + centre).tolist()))


def align_to_silhouette(g: Gaussians, alpha: Tensor, camera: Cameras, iterations: int = 3) -> SilhouetteAlignment:
    """Box-based: alpha (H, W) in [0, 1], the footage's first-frame silhouette as seen by `camera` (one camera)."""
    dev = g.means.device
    camera = camera.to(dev)
    scale, offset = 1.0, torch.zeros(3, device=dev)
    R, t = camera.viewmats[0, :3, :3], camera.viewmats[0, :3, 3]
    f = camera.Ks[0, 0, 0].item()
    tx, ty, ts = _box(alpha)
    for _ in range(iterations):
        cur = SilhouetteAlignment(scale, tuple(offset.tolist()))
        a = cur.apply(g)
        with torch.no_grad():
            _, ra = rasterize(a.means, a.quats, a.scales, a.opacities, a.rgb, camera.viewmats, camera.Ks,
                              camera.width, camera.height)
        rx, ry, rs = _box(ra[0, ..., 0])
        centre_cam = R @ a.means.mean(0) + t
        depth = centre_cam[2].item()
        # scale about the splat's centre so its silhouette size matches, then shift it in the image plane
        k = ts / rs
        centre = a.means.mean(0)
        shift_cam = torch.tensor([(tx - rx) * depth / f, (ty - ry) * depth / f, 0.0], device=dev)
        new_centre_world = centre + R.T @ shift_cam
        # new = (orig*scale + offset - centre)*k + new_centre
        scale = scale * k
        offset = (offset - centre) * k + new_centre_world
    return SilhouetteAlignment(float(scale), tuple(float(v) for v in offset))
