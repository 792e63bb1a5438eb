"""The artist's own mesh as the canonical splat: Gaussians sampled on its surface.

Samples are drawn area-weighted over the triangles (uniform barycentric coordinates); each Gaussian takes the
surface colour there (texture at the interpolated UV, else interpolated vertex colours, else the material's base
colour, else grey), scales from the local spacing of the samples (mean distance to the 3 nearest, halved) in the
surface plane and a tenth of that along the normal, a rotation that lays its thin axis along the face normal,
and opacity 0.9. Files are read with trimesh (.glb/.gltf, .obj, .ply, .stl, ...); glTF's +Y-up is turned into
the +Z-up world (Blender's, and TRELLIS') used everywhere here; other formats are taken as +Z-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..errors import InputFileError
from ..representations import Gaussians, rgb_to_sh_dc
from ..representations.rotation import rotmat_to_quat
from .normalise import Normalisation, normalise_to_unit_cube

DEFAULT_SAMPLES = 100_000
OPACITY = 0.9
FLATNESS = 0.1          # thickness / in-plane size of each sampled Gaussian
Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


class MeshError(InputFileError):
    """A mesh file that cannot be read or sampled."""


@dataclass
class SurfaceMesh:
    """vertices (V, 3), faces (F, 3) int; optional per-vertex colours (V, 3) in [0, 1], UVs (V, 2) with a texture
    (H, W, 3) in [0, 1], or one base colour (3,)."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: Optional[np.ndarray] = None
    uvs: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    base_color: Optional[np.ndarray] = None

    def validate(self, path) -> None:
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise MeshError(path, "the mesh has no triangles (a point cloud or an empty object?); give a surface mesh")
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or not np.isfinite(self.vertices).all():
            raise MeshError(path, "the mesh has non-finite vertex positions (NaN or inf); fix or re-export the object")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise MeshError(path, f"a face refers to vertex {int(self.faces.max())} of {len(self.vertices)}")
        if triangle_areas(self.vertices, self.faces).sum() <= 0:
            raise MeshError(path, "the mesh's surface area is 0 (all triangles are degenerate)")


def triangle_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def read_mesh(path: str | Path) -> SurfaceMesh:
    import trimesh
    path = Path(path)
    if not path.is_file():
        raise MeshError(path, "no such file")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as e:
        raise MeshError(path, f"cannot be read as a mesh ({type(e).__name__}: {e})") from None
    v = np.asarray(loaded.vertices, dtype=np.float64)
    f = np.asarray(loaded.faces, dtype=np.int64).reshape(-1, 3) if len(getattr(loaded, "faces", [])) else np.zeros((0, 3), np.int64)
    if path.suffix.lower() in (".glb", ".gltf") and len(v):
        v = v @ Y_UP_TO_Z_UP.T
    mesh = SurfaceMesh(v, f)
    visual = getattr(loaded, "visual", None)
    if visual is not None and visual.kind == "texture":
        material = getattr(visual, "material", None)
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None and visual.uv is not None:
            mesh.uvs = np.asarray(visual.uv, dtype=np.float64)
            mesh.texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        color = getattr(material, "baseColorFactor", None)
        if color is None:
            color = getattr(material, "main_color", None)
        if color is not None:
            mesh.base_color = np.asarray(color, dtype=np.float64)[:3] / (255 if np.max(color) > 1 else 1)
    elif visual is not None and visual.kind == "vertex":
        mesh.vertex_colors = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255
    mesh.validate(path)
    return mesh


def _sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, UV origin at the bottom left (glTF's images are flipped on load by trimesh), wrapping."""
    h, w = texture.shape[:2]
    x = (uv[:, 0] % 1.0) * w - 0.5
    y = (1 - uv[:, 1] % 1.0) * h - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    px = lambda yy, xx: texture[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # noqa: E731
    return (px(y0, x0) * (1 - fx) * (1 - fy) + px(y0, x0 + 1) * fx * (1 - fy)
            + px(y0 + 1, x0) * (1 - fx) * fy + px(y0 + 1, x0 + 1) * fx * fy)


def sample_surface_gaussians(mesh: SurfaceMesh, count: int = DEFAULT_SAMPLES, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    v, f = mesh.vertices, mesh.faces
    areas = triangle_areas(v, f)
    face = rng.choice(len(f), size=count, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)                       # uniform on each triangle
    corners = f[face]                                                                 # (count, 3)
    points = np.einsum("nk,nkd->nd", bary, v[corners])
    if mesh.texture is not None:
        colors = _sample_texture(mesh.texture, np.einsum("nk,nkd->nd", bary, mesh.uvs[corners]))
        if mesh.base_color is not None:
            colors = colors * mesh.base_color
    elif mesh.vertex_colors is not None:
        colors = np.einsum("nk,nkd->nd", bary, mesh.vertex_colors[corners])
    else:
        colors = np.broadcast_to(mesh.base_color if mesh.base_color is not None else np.full(3, 0.7), (count, 3))
    e1, e2 = v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]
    normal = np.cross(e1, e2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-20)
    tangent = e1 / np.linalg.norm(e1, axis=1, keepdims=True).clip(1e-20)
    frame = np.stack([tangent, np.cross(normal, tangent), normal], axis=2)[face]   # columns: t, b, n
    dist, _ = cKDTree(points).query(points, k=4)
    spacing = dist[:, 1:].mean(1).clip(min=1e-6)
    scales = np.stack([spacing / 2, spacing / 2, spacing / 2 * FLATNESS], axis=1)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    return Gaussians(means=t(points), scales=t(scales), quats=rotmat_to_quat(t(frame)),
                     opacities=torch.full((count,), OPACITY), sh_dc=rgb_to_sh_dc(t(np.clip(colors, 0, 1))))


def load_mesh_canonical(path: str | Path, count: int = DEFAULT_SAMPLES, seed: int = 0) -> tuple[Gaussians, Normalisation]:
    return normalise_to_unit_cube(sample_surface_gaussians(read_mesh(path), count, seed))
