"""A Gaussian splat as the exports write it: its values read from the `.gvf4d` file, then moved into the scene.

Values are activated as in the file (scales in metres, unit quaternions w-x-y-z, opacity in [0, 1], SH DC
colour). A splat moves exactly under a similarity transform (rotation, uniform scale, translation): centres,
orientations and sizes follow it, and the view-dependent SH bands turn with the rotation so that the splat looks
the same from the transformed camera.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..result_file import GVF4DFile
from ..splat_nodes import SH_C1, SH_C2, SH_C3

SH_BANDS = (slice(0, 3), slice(3, 8), slice(8, 15))   # degrees 1-3 within sh_rest's K axis (3DGS order)
SIMILARITY_TOLERANCE = 1e-5


@dataclasses.dataclass
class Splat:
    """position (N, 3), rotation (N, 4) unit w-x-y-z, scale (N, 3), opacity (N,), sh_dc (N, 3), sh_rest (N, K, 3)
    or None; float32."""
    position: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    opacity: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.position)

    @classmethod
    def canonical(cls, f: GVF4DFile) -> "Splat":
        """The canonical splat (the `canonical.*` tensors)."""
        values = {name: np.asarray(f.array(f"canonical.{name}"), np.float32)
                  for name in ("position", "rotation", "scale", "opacity", "sh_dc")}
        return cls(**values, sh_rest=_sh_rest(f))

    @classmethod
    def at_frame(cls, f: GVF4DFile, t: int) -> "Splat":
        """The splat at frame t: each track's frame t, the canonical value where the file has no track."""
        values = {name: (f.frame(f"frames.{name}", t) if f.has(f"frames.{name}")
                         else np.asarray(f.array(f"canonical.{name}"), np.float32))
                  for name in ("position", "rotation", "scale", "opacity", "sh_dc")}
        return cls(**values, sh_rest=_sh_rest(f))

    def normalised(self) -> "Splat":
        """The same splat with unit quaternions (half-precision tracks store them only nearly unit)."""
        q = self.rotation / np.maximum(np.linalg.norm(self.rotation, axis=1, keepdims=True), 1e-12)
        return dataclasses.replace(self, rotation=q.astype(np.float32))


def _sh_rest(f: GVF4DFile) -> np.ndarray | None:
    return np.asarray(f.array("canonical.sh_rest"), np.float32) if f.has("canonical.sh_rest") else None


def sh_degree(num_coefficients: int) -> int:
    """The highest SH degree whose bands are all present among K coefficients above DC (0 to 3)."""
    return sum(1 for band in SH_BANDS if band.stop <= num_coefficients)


def sh_basis(directions: np.ndarray) -> np.ndarray:
    """(M, 3) unit directions -> (M, 15) the real SH basis of degrees 1-3 in 3DGS's order and signs (the
    renderer's: splat_nodes)."""
    x, y, z = np.asarray(directions, np.float64).T
    xx, yy, zz = x * x, y * y, z * z
    return np.stack([
        -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z, SH_C2[4] * (xx - yy),
        SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
        SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
        SH_C3[6] * x * (xx - 3 * yy)], -1)


def _sphere_directions(n: int = 64) -> np.ndarray:
    """(n, 3) unit directions spread evenly over the sphere (a Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def rotate_sh(sh_rest: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N, K, 3) SH bands 1-3 of splats turned by a (3, 3) rotation: the colour the result shows towards R·d is
    the colour the input showed towards d. Each band mixes only within itself; its (2l+1)² matrix is solved from
    the basis at directions on the sphere, exact up to float rounding."""
    k, degree = sh_rest.shape[1], sh_degree(sh_rest.shape[1])
    if k == 0:
        return sh_rest
    if degree == 0 or SH_BANDS[degree - 1].stop != k:
        raise ValueError(f"{k} SH coefficients above DC are not whole bands (3, 8 or 15): cannot turn them")
    d = _sphere_directions()
    basis, turned = sh_basis(d), sh_basis(d @ np.asarray(rotation, np.float64))   # rows: Y(d), Y(Rᵀd)
    out = np.empty_like(sh_rest, dtype=np.float32)
    for band in SH_BANDS[:degree]:
        mix = np.linalg.lstsq(basis[:, band], turned[:, band], rcond=None)[0]       # Y(Rᵀd) = Y(d) · mix
        out[:, band] = mix.astype(np.float32) @ sh_rest[:, band]                      # (b, b) @ (N, b, 3)
    return out


def rotation_quaternion(r: np.ndarray) -> np.ndarray:
    """A (3, 3) rotation as a unit quaternion w-x-y-z (Shepperd's method: divides by the largest component)."""
    r = np.asarray(r, np.float64)
    largest = int(np.argmax([np.trace(r), r[0, 0], r[1, 1], r[2, 2]]))
    if largest == 0:
        w = math.sqrt(1 + np.trace(r)) / 2
        q = (w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w))
    else:
        i, j, k = (largest - 1, largest % 3, (largest + 1) % 3)
        v = np.empty(3)
        v[i] = math.sqrt(1 + r[i, i] - r[j, j] - r[k, k]) / 2
        v[j], v[k] = (r[j, i] + r[i, j]) / (4 * v[i]), (r[k, i] + r[i, k]) / (4 * v[i])
        q = ((r[k, j] - r[j, k]) / (4 * v[i]), *v)
    return np.array(q) / np.linalg.norm(q)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a ⊗ b of w-x-y-z quaternions (broadcasting over leading axes)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


@dataclasses.dataclass(frozen=True)
class Similarity:
    """p -> scale · rotation · p + offset; rotation (3, 3) proper orthonormal, scale > 0, offset (3,)."""
    rotation: np.ndarray
    scale: float
    offset: np.ndarray

    @classmethod
    def from_matrix(cls, matrix) -> "Similarity":
        """From a (4, 4) affine matrix; ValueError when it shears, scales unevenly or mirrors (a splat cannot
        follow those exactly)."""
        m = np.asarray(matrix, np.float64)
        linear = m[:3, :3]
        det = np.linalg.det(linear)
        scale = math.copysign(abs(det) ** (1 / 3), det)
        if not np.allclose(m[3], (0, 0, 0, 1)) or scale <= 0 or not np.allclose(
                linear.T @ linear, np.eye(3) * scale ** 2, atol=SIMILARITY_TOLERANCE * scale ** 2):
            column_lengths = np.linalg.norm(linear, axis=0)
            raise ValueError("the object's transform scales unevenly, shears or mirrors (axis scales "
                             f"{', '.join(f'{s:.4g}' for s in column_lengths)}); a splat export needs the same "
                             "positive scale on all three axes")
        return cls(rotation=linear / scale, scale=scale, offset=m[:3, 3].copy())

    def is_identity(self) -> bool:
        return bool(np.array_equal(self.rotation, np.eye(3)) and self.scale == 1.0 and not self.offset.any())

    def apply(self, splat: Splat) -> Splat:
        """The splat moved by this transform (the input unchanged)."""
        splat = splat.normalised()
        if self.is_identity():
            return splat
        turn = rotation_quaternion(self.rotation)
        return dataclasses.replace(
            splat,
            position=(splat.position @ (self.scale * self.rotation).T + self.offset).astype(np.float32),
            rotation=quaternion_multiply(turn, splat.rotation).astype(np.float32),
            scale=(splat.scale * self.scale).astype(np.float32),
            sh_rest=None if splat.sh_rest is None else rotate_sh(splat.sh_rest, self.rotation))
