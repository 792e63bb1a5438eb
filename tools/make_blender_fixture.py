"""Writes .gvf4d files with the backend's writer (and the expected arrays) for the add-on's Blender tests.

    .venv/bin/python tools/make_blender_fixture.py OUT_DIR

OUT_DIR/shot.gvf4d + expected.npz: positions, rotations and scales move, with a small mesh riding along.
OUT_DIR/fidelity.gvf4d + fidelity.npz: every track moves (positions, rotations of anisotropic splats, growing
scales, fading opacity, changing colour, degree-3 SH), with the footage camera's metadata (crop, unapplied
alignment, normalisation, facing), the plate (fidelity_plate/*.png) and the backend's reference renders from the
plate camera (see `render_linear_light`).
"""
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gvf4d.rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS, footage_camera
from gvf4d.rendering.rasterize_reference import rasterize_reference
from gvf4d.representations import AnimatedGaussians, Gaussians
from gvf4d.representations.gaussians import SH_C0
from gvf4d.result import write_result
from gvf4d.result.file import ResultFile
from gvf4d.synthetic import make_synthetic_shot

PLATE_SIZE = (160, 120)                  # the source footage's (width, height)
CROP_BOX = (19.0, -7.0, 149.0, 123.0)    # the backend's square crop, in source pixels (may leave the image)
ALIGNMENT = {"scale": 0.9, "offset": [0.03, 0.05, -0.04]}
NORMALISATION = {"centre": [0.4, -0.3, 1.2], "scale": 0.7}
FACING_DEG = 30.0
REFERENCE_TIMES = (0.0, 2.0, 4.0, 1.5)   # result frames rendered by the backend (1.5: half-way, interpolated)

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shot = make_synthetic_shot(num_frames=6, gaussians_per_part=50, seed=9)
    a = shot.animated
    # a small mesh riding along: the first 40 Gaussians' centres as vertices of a triangle fan
    v = a.canonical.means[:40]
    faces = torch.tensor([[0, i, i + 1] for i in range(1, 39)], dtype=torch.int32)
    mesh = {"vertices": v, "faces": faces, "colors": a.canonical.rgb[:40].clamp(0, 1), "frames": a.positions[:, :40]}
    write_result(out / "shot.gvf4d", a, {"fps": 24.0, "engine": {"name": "synthetic-ground-truth"}}, mesh=mesh)
    # a shot for the backend: its footage and the artist's canonical splat
    from gvf4d.pipelines.demo import write_shot_files
    write_shot_files(make_synthetic_shot(num_frames=4, gaussians_per_part=40, seed=2), out, 64)
    np.savez(out / "expected.npz", positions=a.positions.numpy(), rgb=a.canonical.rgb.clamp(0, 1).numpy(),
             opacity=a.canonical.opacities.numpy(), scales=a.scales.numpy(), quats=a.quats.numpy(),
             canonical_quats=a.canonical.quats.numpy(),
             mesh_frames=a.positions[:, :40].numpy(), faces=faces.numpy())
    write_fidelity(out)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def sh_colour(sh_dc: torch.Tensor, sh_rest: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """3DGS colour (N, 3) in [0, 1] from the SH DC term (N, 3), bands 1-3 (N, 15, 3) and view directions (N, 3)."""
    x, y, z = torch.nn.functional.normalize(directions, dim=-1).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    basis = torch.stack([
        -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z, SH_C2[4] * (xx - yy),
        SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
        SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
        SH_C3[6] * x * (xx - 3 * yy)], -1)                                        # (N, 15)
    return (0.5 + SH_C0 * sh_dc + torch.einsum("nk,nkc->nc", basis, sh_rest)).clamp(0.0, 1.0)


def plate_camera(width: int, height: int, box) -> tuple[torch.Tensor, torch.Tensor]:
    """The footage camera seen in source pixels: (4, 4) world->camera and (3, 3) K. The 512-px canvas camera's
    focal length scaled by the crop (Pillow crops at the rounded box, resized to 380 px centred on the canvas)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    canvas = footage_camera(512, 512)
    f = float(canvas.Ks[0, 0, 0]) * (x1 - x0) / 380
    K = torch.tensor([[f, 0.0, (x0 + x1) / 2], [0.0, f, (y0 + y1) / 2], [0.0, 0.0, 1.0]])
    return canvas.viewmats[0], K


def slerp(q0: torch.Tensor, q1: torch.Tensor, w: float) -> torch.Tensor:
    """(N, 4) unit quaternions blended spherically the shortest way."""
    q0, q1 = torch.nn.functional.normalize(q0, dim=-1), torch.nn.functional.normalize(q1, dim=-1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1, dot = torch.where(dot < 0, -q1, q1), dot.abs().clamp(max=1.0)
    angle = torch.acos(dot)
    small = angle < 1e-6
    s = torch.sin(angle).clamp_min(1e-12)
    k0 = torch.where(small, torch.full_like(angle, 1 - w), torch.sin((1 - w) * angle) / s)
    k1 = torch.where(small, torch.full_like(angle, w), torch.sin(w * angle) / s)
    return torch.nn.functional.normalize(k0 * q0 + k1 * q1, dim=-1)


def frame_at(a: AnimatedGaussians, time: float) -> Gaussians:
    """The splat at a fractional frame: tracks interpolated linearly, rotations spherically."""
    t0 = min(int(math.floor(time)), a.num_frames - 1)
    t1, w = min(t0 + 1, a.num_frames - 1), time - t0
    g0, g1 = a.frame(t0), a.frame(t1)
    mix = lambda u, v: u * (1 - w) + v * w
    return Gaussians(means=mix(g0.means, g1.means), scales=mix(g0.scales, g1.scales),
                     quats=slerp(g0.quats, g1.quats, w),
                     opacities=mix(g0.opacities, g1.opacities), sh_dc=mix(g0.sh_dc, g1.sh_dc), sh_rest=g0.sh_rest)


def render_linear_light(g: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """The reference rasterizer (eps2d 0.3 as the backend) blending colours in linear light over white, the
    result encoded to sRGB: what Blender composites. -> rgb (H, W, 3) display values, alpha (H, W)."""
    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
    rgb = sh_colour(g.sh_dc, g.sh_rest, g.means - campos)
    with torch.no_grad():
        lin, alpha = rasterize_reference(g.means, g.quats, g.scales, g.opacities, srgb_to_linear(rgb), viewmat[None],
                                         K[None], width, height, backgrounds=torch.ones(1, 3), eps2d=0.3)
    return linear_to_srgb(lin[0]), alpha[0, ..., 0]


def fidelity_shot(num_frames: int = 5) -> AnimatedGaussians:
    """300 Gaussians whose every track moves; colours stay inside [0, 1]."""
    a = make_synthetic_shot(num_frames=num_frames, gaussians_per_part=50, seed=4, motion_scale=1.5).animated
    c = a.canonical
    gen = torch.Generator().manual_seed(5)
    n = len(c)
    ramp = torch.linspace(0.0, 1.0, num_frames)
    scales = a.scales * (1 + 0.35 * ramp)[:, None, None]                                  # growing
    opacities = c.opacities[None] * (1 - 0.6 * ramp[:, None] * torch.rand(n, generator=gen)[None])   # fading
    rgb0 = c.rgb.clamp(0.05, 0.95)
    tint = torch.rand(n, 3, generator=gen) * 0.9 + 0.05
    rgb = rgb0[None] + (tint - rgb0)[None] * 0.6 * ramp[:, None, None]                    # changing colour
    sh_rest = 0.08 * torch.randn(n, 15, 3, generator=gen)
    canonical = Gaussians(means=c.means, scales=c.scales, quats=c.quats, opacities=c.opacities,
                          sh_dc=(rgb0 - 0.5) / SH_C0, sh_rest=sh_rest)
    return AnimatedGaussians(canonical, a.positions, scales=scales, quats=a.quats, opacities=opacities,
                             sh_dc=(rgb - 0.5) / SH_C0)


def write_fidelity(out: Path) -> None:
    a = fidelity_shot()
    T = a.num_frames
    width, height = PLATE_SIZE
    side = CROP_BOX[2] - CROP_BOX[0]
    plate_dir = out / "fidelity_plate"
    metadata = {
        "fps": 24.0,
        "footage": {"path": str(plate_dir), "sha256": "", "frame_indices": list(range(T)), "frame_start": 0,
                    "frame_end": T - 1, "stride": 1, "source_size": [width, height], "fps": 24.0},
        "crop": {"box": list(CROP_BOX), "side_px": side, "object_px": 380, "canvas_px": 512, "scale": 380 / side},
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0},
        "canonical": {"source": "splat", "path": "artist.ply",
                      "facing": {"azimuth_deg": FACING_DEG, "scorer": "silhouette", "step_deg": 5.0},
                      "alignment": {**ALIGNMENT, "applied": False}},
        "coordinates": {"normalisation": {**NORMALISATION, "meaning": "normalised = (original - centre) * scale"}},
        "engine": {"name": "gvf"},
    }
    path = write_result(out / "fidelity.gvf4d", a, metadata)
    stored = ResultFile(path).animated()            # the tracks as stored (half precision), as Blender reads them
    viewmat, K = plate_camera(width, height, CROP_BOX)
    s, off = ALIGNMENT["scale"], torch.tensor(ALIGNMENT["offset"])
    images, alphas = [], []
    for time in (*range(T), *REFERENCE_TIMES[3:]):
        g = frame_at(stored, float(time))
        g = Gaussians(means=g.means * s + off, scales=g.scales * s, quats=g.quats, opacities=g.opacities,
                      sh_dc=g.sh_dc, sh_rest=g.sh_rest)      # the unapplied alignment: footage space
        rgb, alpha = render_linear_light(g, viewmat, K, width, height)
        images.append(rgb.numpy())
        alphas.append(alpha.numpy())
    plate_dir.mkdir(parents=True, exist_ok=True)
    for t in range(T):
        rgba = np.dstack([images[t], alphas[t]])
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(plate_dir / f"frame_{t:04d}.png")
    times = [*range(T), *REFERENCE_TIMES[3:]]
    # the artist's asset: the canonical splat before the facing rotation (about +Z by -azimuth) and the
    # normalisation, which is where the placement option puts the result
    a_rad = math.radians(FACING_DEG)
    rz = torch.tensor([[math.cos(a_rad), -math.sin(a_rad), 0.0], [math.sin(a_rad), math.cos(a_rad), 0.0], [0, 0, 1.0]])
    asset = (stored.canonical.means @ rz.T) / NORMALISATION["scale"] + torch.tensor(NORMALISATION["centre"])
    np.savez(out / "fidelity.npz", times=np.array(times, np.float32), images=np.stack(images),
             alphas=np.stack(alphas), viewmat=viewmat.numpy(), K=K.numpy(), asset_positions=asset.numpy(),
             positions=stored.positions.numpy(), scales=stored.scales.numpy(), quats=stored.quats.numpy(),
             opacities=stored.opacities.numpy(), sh_dc=stored.sh_dc.numpy(),
             sh_rest=stored.canonical.sh_rest.numpy())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
