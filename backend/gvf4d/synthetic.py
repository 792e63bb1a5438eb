"""Procedurally animated objects with exact per-frame Gaussians: the demo's input and the ground truth.

A body of a few ellipsoids (torso, head, two arms, a tail) covered by surface Gaussians, animated over T
frames (frame 0 is the rest pose, which is the canonical splat) with squash-and-stretch (torso), a nod (head), swinging and bending (arms, tail). Every Gaussian's
frame-t position and covariance are the exact image of its canonical ones under that frame's deformation,
so the tracks are ground truth; the footage is rendered from them with the front camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .representations import AnimatedGaussians, Gaussians, rgb_to_sh_dc
from .representations.rotation import rotmat_to_quat
from .rendering import footage_camera, rasterize


@dataclass(frozen=True)
class Part:
    name: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    colour: tuple[float, float, float]
    pivot: tuple[float, float, float]
    axis: tuple[float, float, float]   # rotation axis of its motion
    swing_deg: float                   # amplitude of the swing about `axis`
    bend_deg: float                    # extra rotation growing with distance from the pivot
    phase: float


PARTS = (
    Part("head", (0.0, 0.0, 0.30), (0.12, 0.11, 0.11), (0.95, 0.80, 0.25), (0.0, 0.0, 0.2), (1, 0, 0), 14.0, 0.0, 0.5),
    Part("arm_l", (-0.30, 0.0, 0.06), (0.15, 0.05, 0.05), (0.20, 0.45, 0.90), (-0.15, 0.0, 0.08), (0, 1, 0), 30.0, 25.0, 0.0),
    Part("arm_r", (0.30, 0.0, 0.06), (0.15, 0.05, 0.05), (0.60, 0.30, 0.85), (0.15, 0.0, 0.08), (0, 1, 0), -30.0, -25.0, 1.3),
    Part("tail", (0.0, 0.13, -0.22), (0.05, 0.16, 0.05), (0.85, 0.30, 0.55), (0.0, 0.04, -0.20), (0, 0, 1), 35.0, 20.0, 0.7),
)
TORSO = Part("torso", (0.0, 0.0, -0.02), (0.17, 0.12, 0.21), (0.90, 0.45, 0.15), (0.0, 0.0, -0.23), (0, 0, 1), 0.0, 0.0, 0.0)


@dataclass
class SyntheticShot:
    """animated: the ground-truth splat over T frames; part_ids (N,) index into `parts`."""

    animated: AnimatedGaussians
    part_ids: Tensor
    parts: tuple[Part, ...]
    fps: float


def _axis_angle(axis: Tensor, angle: Tensor) -> Tensor:
    """(3,) unit axis, (...,) angles -> (..., 3, 3) rotation matrices (Rodrigues)."""
    k = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return torch.eye(3) + s * k + (1 - c) * (k @ k)


def _fibonacci_sphere(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5 ** 0.5) * i
    return torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1).float()


def _surface_gaussians(part: Part, n: int, generator: torch.Generator):
    """Gaussians flat on an ellipsoid's surface. Returns means, covariances (n, 3, 3), rgb."""
    u = _fibonacci_sphere(n)
    radii = torch.tensor(part.radii)
    means = u * radii + torch.tensor(part.centre)
    normals = torch.nn.functional.normalize(u / radii, dim=-1)
    # an orthonormal frame per Gaussian with z along the normal
    helper = torch.where(normals[:, :1].abs() < 0.9, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    t1 = torch.nn.functional.normalize(torch.linalg.cross(normals, helper.expand_as(normals)), dim=-1)
    t2 = torch.linalg.cross(normals, t1)
    frame = torch.stack([t1, t2, normals], -1)
    area = 4 * math.pi * ((radii[0] * radii[1]) ** 1.6 + (radii[0] * radii[2]) ** 1.6 + (radii[1] * radii[2]) ** 1.6 / 3) ** (1 / 1.6)
    s = 0.9 * math.sqrt(float(area) / n)
    sc = torch.tensor([s, s, 0.25 * s])
    cov = frame @ torch.diag(sc ** 2) @ frame.transpose(-1, -2)
    # colour: the part's colour with stripes around its main axis, so motion shows in the footage
    stripes = 0.75 + 0.25 * torch.sign(torch.sin(6 * torch.atan2(u[:, 1], u[:, 0]) + 4 * u[:, 2]))
    rgb = (torch.tensor(part.colour) * stripes[:, None] + 0.03 * torch.randn(n, 3, generator=generator)).clamp(0.02, 0.98)
    return means, cov, rgb


def _covariance_to_scale_quat(cov: Tensor) -> tuple[Tensor, Tensor]:
    evals, evecs = torch.linalg.eigh(cov.double())
    flip = torch.linalg.det(evecs) < 0
    evecs[flip, :, 0] *= -1
    return evals.clamp_min(1e-14).sqrt().float(), rotmat_to_quat(evecs.float())


def make_synthetic_shot(num_frames: int = 32, gaussians_per_part: int = 800, seed: int = 0, fps: float = 24.0,
                        motion_scale: float = 1.0) -> SyntheticShot:
    """A ground-truth animated splat. motion_scale scales every amplitude (0 = static)."""
    gen = torch.Generator().manual_seed(seed)
    parts = (TORSO,) + PARTS
    means, covs, rgbs, ids = [], [], [], []
    for i, part in enumerate(parts):
        n = gaussians_per_part * (2 if part is TORSO else 1)
        m, c, col = _surface_gaussians(part, n, gen)
        means.append(m), covs.append(c), rgbs.append(col), ids.append(torch.full((n,), i))
    means, covs, rgbs, part_ids = torch.cat(means), torch.cat(covs), torch.cat(rgbs), torch.cat(ids)
    n_total = means.shape[0]
    time = torch.arange(num_frames, dtype=torch.float32) / max(num_frames, 1)
    seed_phase = 0.37 * seed

    def wave(phase: float) -> Tensor:
        """(T,) a periodic motion that is 0 at frame 0: the canonical splat is the first frame's pose."""
        return torch.sin(2 * math.pi * time + phase) - math.sin(phase)

    # torso: squash and stretch about its base (volume preserving) and a gentle sway about Z
    stretch = 1 + motion_scale * 0.12 * wave(seed_phase)
    torso_a = torch.zeros(num_frames, 3, 3)
    torso_a[:, 0, 0] = torso_a[:, 1, 1] = stretch.rsqrt()
    torso_a[:, 2, 2] = stretch
    sway = _axis_angle(torch.tensor([0.0, 0.0, 1.0]), motion_scale * math.radians(12) * wave(seed_phase + 1.0))
    torso_a = sway @ torso_a                                       # (T, 3, 3)
    torso_pivot = torch.tensor(TORSO.pivot)

    A = torso_a[:, None].expand(num_frames, n_total, 3, 3).clone()   # per frame, per Gaussian linear part
    local = means.clone()[None].expand(num_frames, -1, -1).clone()   # position after the part's own motion
    for i, part in enumerate(parts):
        if part is TORSO:
            continue
        sel = part_ids == i
        pivot, axis = torch.tensor(part.pivot), torch.nn.functional.normalize(torch.tensor(part.axis, dtype=torch.float32), dim=0)
        dist = (means[sel] - pivot).norm(dim=-1) / max(part.radii) / 2           # ~0 at the pivot, ~1 at the tip
        angle = motion_scale * math.radians(1) * (part.swing_deg + part.bend_deg * dist[None, :]) * wave(part.phase + seed_phase)[:, None]
        rot = _axis_angle(axis, angle)                                           # (T, n, 3, 3)
        local[:, sel] = torch.einsum("tnij,nj->tni", rot, means[sel] - pivot) + pivot
        A[:, sel] = torso_a[:, None] @ rot
    positions = torch.einsum("tij,tnj->tni", torso_a, local - torso_pivot) + torso_pivot
    covs_t = A @ covs[None] @ A.transpose(-1, -2)
    scales_t, quats_t = _covariance_to_scale_quat(covs_t.reshape(-1, 3, 3))
    scales_t, quats_t = scales_t.reshape(num_frames, n_total, 3), quats_t.reshape(num_frames, n_total, 4)
    scales_0, quats_0 = _covariance_to_scale_quat(covs)
    # keep each frame's quaternion on the same hemisphere as the canonical one (smooth tracks)
    quats_t = torch.where(((quats_t * quats_0).sum(-1, keepdim=True) < 0), -quats_t, quats_t)

    canonical = Gaussians(means=means, scales=scales_0, quats=quats_0,
                          opacities=torch.full((n_total,), 0.92), sh_dc=rgb_to_sh_dc(rgbs))
    animated = AnimatedGaussians(canonical=canonical, positions=positions, scales=scales_t, quats=quats_t)
    return SyntheticShot(animated=animated, part_ids=part_ids, parts=parts, fps=fps)


def render_footage(animated: AnimatedGaussians, width: int = 128, height: int = 128) -> Tensor:
    """Renders every frame from the footage camera: (T, H, W, 4) uint8 RGBA, straight (not premultiplied)."""
    cam = footage_camera(width, height).to(animated.positions.device)
    frames = []
    with torch.no_grad():
        for t in range(animated.num_frames):
            g = animated.frame(t)
            rgb, alpha = rasterize(g.means, g.quats, g.scales, g.opacities, g.rgb, cam.viewmats, cam.Ks, width, height)
            a = alpha[0]
            straight = torch.where(a > 1e-6, rgb[0] / a.clamp_min(1e-6), torch.zeros_like(rgb[0]))
            frames.append(torch.cat([straight, a], -1))
    return (torch.stack(frames).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
