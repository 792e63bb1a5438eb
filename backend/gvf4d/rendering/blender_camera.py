"""A Blender camera, given as its parameters in JSON, as the OpenCV view matrix and intrinsics of cameras.py.

Blender's camera looks along its local -Z with +Y up; OpenCV's along +Z with +Y down, so the camera-to-world
rotation is Blender's with its Y and Z axes negated. The intrinsics follow Blender's view plane
(BKE_camera_params_compute_viewplane): the sensor fit picks the image side the sensor spans (AUTO: the larger
side, measured by `sensor_width`), the focal length in pixels is lens / sensor * that side, and the shifts move
the principal point by shift * that side (square pixels). docs/render.md describes the JSON.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputFileError
from ..representations.rotation import quat_to_rotmat
from .cameras import Cameras

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
# Blender's defaults for the keys a camera may leave out
DEFAULTS = {"sensor_width": 36.0, "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
            "resolution_percentage": 100, "clip_start": 0.1, "clip_end": 1000.0}
TRANSFORM_KEYS = ("location", "rotation_quaternion", "rotation_euler", "matrix_world")
REQUIRED_KEYS = ("lens", "resolution_x", "resolution_y")
INFORMATIONAL_KEYS = ("name", "frame", "type")
BLENDER_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))


class CameraFileError(InputFileError):
    """A camera JSON file that cannot be read or does not describe Blender cameras."""


@dataclass(frozen=True)
class BlenderCamera:
    """One perspective Blender camera. rotation (3, 3) and location (3,) are its world transform (float64, scale
    removed); lens, sensor sizes in millimetres; shifts in units of the fitted image side; resolution in pixels."""

    rotation: Tensor
    location: Tensor
    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    clip_start: float
    clip_end: float

    @classmethod
    def from_json(cls, obj) -> "BlenderCamera":
        """Validates one camera object; ValueError says which key is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"a camera must be a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(TRANSFORM_KEYS) - set(REQUIRED_KEYS) - set(DEFAULTS) - set(INFORMATIONAL_KEYS))
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        if obj.get("type", "PERSP") != "PERSP":
            raise ValueError(f"type {obj['type']!r}: only perspective cameras ('PERSP') are rendered")
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        if missing:
            raise ValueError(f"missing keys {missing}")
        rotation, location = _transform(obj)
        p = {**DEFAULTS, **{k: v for k, v in obj.items() if k in DEFAULTS or k in REQUIRED_KEYS}}
        for k in ("lens", "sensor_width", "sensor_height", "clip_start", "clip_end"):
            if _number(p[k], k) <= 0:
                raise ValueError(f"{k} must be positive, got {p[k]}")
        for k in ("shift_x", "shift_y"):
            _number(p[k], k)
        for k in ("resolution_x", "resolution_y", "resolution_percentage"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
                raise ValueError(f"{k} must be a positive integer, got {p[k]!r}")
        if p["sensor_fit"] not in SENSOR_FITS:
            raise ValueError(f"sensor_fit {p['sensor_fit']!r} is not one of {list(SENSOR_FITS)}")
        if p["clip_end"] <= p["clip_start"]:
            raise ValueError(f"clip_end {p['clip_end']} is not beyond clip_start {p['clip_start']}")
        pct = p["resolution_percentage"]
        width, height = p["resolution_x"] * pct // 100, p["resolution_y"] * pct // 100
        if width < 1 or height < 1:
            raise ValueError(f"resolution {p['resolution_x']}x{p['resolution_y']} at {pct}% is empty")
        return cls(rotation=rotation, location=location, lens=float(p["lens"]), sensor_width=float(p["sensor_width"]),
                   sensor_height=float(p["sensor_height"]), sensor_fit=p["sensor_fit"], shift_x=float(p["shift_x"]),
                   shift_y=float(p["shift_y"]), resolution_x=width, resolution_y=height,
                   clip_start=float(p["clip_start"]), clip_end=float(p["clip_end"]))

    def viewmat(self) -> Tensor:
        """(4, 4) float64 world -> camera, OpenCV axes."""
        r = (self.rotation @ BLENDER_TO_OPENCV).T
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = r
        m[:3, 3] = -r @ self.location
        return m

    def intrinsics(self, width: int, height: int) -> Tensor:
        """(3, 3) float64 K for an image of width x height pixels, as Blender's view plane for that resolution."""
        fit = self.sensor_fit
        if fit == "AUTO":
            fit = "HORIZONTAL" if width >= height else "VERTICAL"
        sensor = self.sensor_height if self.sensor_fit == "VERTICAL" else self.sensor_width
        side = width if fit == "HORIZONTAL" else height
        f = self.lens / sensor * side
        return torch.tensor([[f, 0.0, width / 2 - self.shift_x * side],
                             [0.0, f, height / 2 + self.shift_y * side],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)

    def cameras(self, size: tuple[int, int] | None = None) -> Cameras:
        """This camera at its own resolution, or at size (width, height) as if Blender's resolution were set to it."""
        width, height = size or (self.resolution_x, self.resolution_y)
        return Cameras(self.viewmat()[None].float(), self.intrinsics(width, height)[None].float(), width, height)


def read_blender_cameras(path: str | os.PathLike) -> list[BlenderCamera]:
    """A JSON file holding one camera object, or a list of them (an animated camera, one per rendered frame)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CameraFileError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CameraFileError(path, f"not a readable JSON file: {e}") from None
    return blender_cameras(data, path)


def blender_cameras(data, source) -> list[BlenderCamera]:
    """Parsed JSON holding one camera object or a list of them; CameraFileError names `source` (the file, or the
    field of a request) and the camera that is wrong."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise CameraFileError(source, "the list of cameras is empty")
    cameras = []
    for i, item in enumerate(items):
        try:
            cameras.append(BlenderCamera.from_json(item))
        except ValueError as e:
            where = f"camera {i}: " if isinstance(data, list) else ""
            raise CameraFileError(source, f"{where}{e}") from None
    return cameras


def _number(v, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _vector(v, n: int, key: str) -> Tensor:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ValueError(f"{key} must be a list of {n} numbers, got {v!r}")
    return torch.tensor([_number(x, key) for x in v], dtype=torch.float64)


def _euler_xyz(angles: Tensor) -> Tensor:
    """Blender's XYZ Euler (radians): X applied first, so R = Rz @ Ry @ Rx."""
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    one, zero = torch.ones((), dtype=angles.dtype), torch.zeros((), dtype=angles.dtype)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).reshape(3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).reshape(3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).reshape(3, 3)
    return rz @ ry @ rx


def _transform(obj: dict) -> tuple[Tensor, Tensor]:
    """(rotation (3, 3), location (3,)) from matrix_world, or from location and one rotation."""
    if "matrix_world" in obj:
        if any(k in obj for k in ("location", "rotation_quaternion", "rotation_euler")):
            raise ValueError("give matrix_world or location + rotation, not both")
        rows = obj["matrix_world"]
        if not isinstance(rows, (list, tuple)) or len(rows) != 4:
            raise ValueError("matrix_world must be 4 rows of 4 numbers")
        m = torch.stack([_vector(r, 4, "matrix_world") for r in rows])
        if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
            raise ValueError(f"matrix_world's last row is {m[3].tolist()}, not [0, 0, 0, 1]")
        scale = m[:3, :3].norm(dim=0)
        if (scale < 1e-12).any():
            raise ValueError("matrix_world has a zero scale")
        rotation = m[:3, :3] / scale        # Blender normalises the camera matrix: its scale does not change the view
        if not torch.allclose(rotation.T @ rotation, torch.eye(3, dtype=torch.float64), atol=1e-4) \
                or torch.linalg.det(rotation) < 0:
            raise ValueError("matrix_world is sheared or mirrored, not a rotation, scale and translation")
        return rotation, m[:3, 3]
    if "location" not in obj:
        raise ValueError("missing key 'location' (or give 'matrix_world')")
    location = _vector(obj["location"], 3, "location")
    given = [k for k in ("rotation_quaternion", "rotation_euler") if k in obj]
    if len(given) != 1:
        raise ValueError("give exactly one of rotation_quaternion [w, x, y, z] and rotation_euler [x, y, z]")
    if given[0] == "rotation_quaternion":
        q = _vector(obj["rotation_quaternion"], 4, "rotation_quaternion")
        if q.norm() < 1e-12:
            raise ValueError("rotation_quaternion is zero")
        return quat_to_rotmat(q), location
    return _euler_xyz(_vector(obj["rotation_euler"], 3, "rotation_euler")), location
