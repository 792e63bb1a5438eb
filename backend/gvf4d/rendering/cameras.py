"""Pinhole cameras in the project's world frame (Blender: right-handed, Z up).

View matrices are world-to-camera in the OpenCV convention (x right, y down, z forward), as gsplat takes
them. The footage camera sits at azimuth 0 on the -Y side looking along +Y, as the published model assumes
(FoV-x 49.1 degrees, orbit radius 2, elevation 0; the object fits in the unit cube at the origin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

FOOTAGE_FOV_X_DEG = 49.1
FOOTAGE_RADIUS = 2.0


@dataclass
class Cameras:
    """C cameras sharing one image size. viewmats (C, 4, 4) world->camera; Ks (C, 3, 3)."""

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def to(self, device) -> "Cameras":
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height)

    def __getitem__(self, i) -> "Cameras":
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return Cameras(self.viewmats[sl], self.Ks[sl], self.width, self.height)

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height,
                "viewmats": self.viewmats.tolist(), "Ks": self.Ks.tolist(), "convention": "opencv world-to-camera"}


def intrinsics(fov_x_deg: float, width: int, height: int) -> Tensor:
    """(3, 3) K with square pixels and the principal point at the image centre."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_at(position: Tensor, target: Tensor, up: Tensor = torch.tensor([0.0, 0.0, 1.0])) -> Tensor:
    """(4, 4) world->camera (OpenCV) for a camera at `position` looking at `target`."""
    forward = torch.nn.functional.normalize(target - position, dim=0)
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-8:  # looking straight up or down: pick +X as right
        right = torch.tensor([1.0, 0.0, 0.0])
    right = torch.nn.functional.normalize(right, dim=0)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    m = torch.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = -rot @ position
    return m


def orbit_position(azimuth_deg: float, elevation_deg: float, radius: float) -> Tensor:
    """Azimuth 0 is the front (-Y side); positive azimuth turns the camera counter-clockwise seen from +Z."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return torch.tensor([radius * math.cos(e) * math.sin(a), -radius * math.cos(e) * math.cos(a), radius * math.sin(e)])


def orbit_cameras(azimuths_deg: Sequence[float], elevations_deg: Sequence[float] | float = 0.0,
                  radius: float = FOOTAGE_RADIUS, fov_x_deg: float = FOOTAGE_FOV_X_DEG,
                  width: int = 512, height: int = 512) -> Cameras:
    if isinstance(elevations_deg, (int, float)):
        elevations_deg = [float(elevations_deg)] * len(azimuths_deg)
    views = [look_at(orbit_position(a, e, radius), torch.zeros(3)) for a, e in zip(azimuths_deg, elevations_deg)]
    K = intrinsics(fov_x_deg, width, height)
    return Cameras(torch.stack(views), K.expand(len(views), 3, 3).clone(), width, height)


def footage_camera(width: int = 512, height: int = 512) -> Cameras:
    """The camera the footage frames are taken to be seen from (front view)."""
    return orbit_cameras([0.0], 0.0, FOOTAGE_RADIUS, FOOTAGE_FOV_X_DEG, width, height)
