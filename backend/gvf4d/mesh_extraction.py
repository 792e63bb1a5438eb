"""A mesh from any canonical splat, and its per-frame deformation from the Gaussians' motion.

Surface: the splat's density  d(x) = sum_i o_i exp(-1/2 (x - mu_i)^T S_i^-1 (x - mu_i))  on a grid (each Gaussian's
scales floored at 3/4 of a voxel so thin shells are not missed between grid points), the enclosed space filled (gaps in thin shells up to
6 voxels wide count as closed), then
marching cubes (scikit-image) at `level`; cleaned (duplicate/unreferenced vertices, small pieces) and decimated to
a face budget by quadric edge collapse (pymeshlab). Vertex colours: inverse-distance blend of the 4 nearest
Gaussians' colours.
Deformation: each vertex follows its k nearest canonical Gaussians (weights opacity / distance, normalised), each
carrying it rigidly — vertex_t = sum_k w_k (mu_k,t + R_k,t R_k,0^T (vertex - mu_k,0)) — so rotations of the
Gaussians turn the surface with them (exact for a rigid motion).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch import Tensor

from .representations import AnimatedGaussians, Gaussians
from .representations.rotation import quat_to_rotmat

MAX_RADIUS_VOXELS = 8
SEAL_VOXELS = 3
_CHUNK_EVALUATIONS = 1 << 24


@dataclass
class ExtractedMesh:
    vertices: np.ndarray    # (V, 3) float32
    faces: np.ndarray       # (F, 3) int32
    colors: np.ndarray      # (V, 3) float32 in [0, 1]


def density_grid(g: Gaussians, resolution: int = 128, padding: float = 0.05) -> tuple[np.ndarray, np.ndarray, float]:
    """-> density (R, R, R) float32 indexed [x, y, z], the grid's origin (3,), voxel size."""
    means = g.means.float()
    lo, hi = means.min(0).values, means.max(0).values
    extent = float((hi - lo).max()) * (1 + 2 * padding) + 1e-6
    voxel = extent / (resolution - 1)
    origin = (lo + hi) / 2 - extent / 2
    scales = g.scales.float().clamp_min(0.75 * voxel)
    rot = quat_to_rotmat(g.quats.float())
    precision = (rot / scales[:, None, :] ** 2) @ rot.transpose(1, 2)                   # (N, 3, 3)
    radius = torch.ceil(3 * scales.max(1).values / voxel).clamp(1, MAX_RADIUS_VOXELS).long()
    centre = torch.round((means - origin) / voxel).long()
    grid = torch.zeros(resolution ** 3, dtype=torch.float32, device=means.device)
    for r in torch.unique(radius).tolist():
        idx = torch.nonzero(radius == r)[:, 0]
        span = torch.arange(-r, r + 1, device=means.device)
        offsets = torch.cartesian_prod(span, span, span)                                  # (K, 3)
        chunk = max(1, _CHUNK_EVALUATIONS // len(offsets))
        for i in range(0, len(idx), chunk):
            sel = idx[i:i + chunk]
            cells = centre[sel, None, :] + offsets[None]                                   # (n, K, 3)
            d = cells * voxel + origin - means[sel, None, :]
            power = torch.einsum("nki,nij,nkj->nk", d, precision[sel], d)
            value = g.opacities[sel, None].float() * torch.exp(-0.5 * power)
            inside = ((cells >= 0) & (cells < resolution)).all(-1) & (power < 9 * 2)
            flat = (cells[..., 0] * resolution + cells[..., 1]) * resolution + cells[..., 2]
            grid.index_add_(0, flat[inside], value[inside])
    return grid.reshape(resolution, resolution, resolution).cpu().numpy(), origin.cpu().numpy(), voxel


def _clean_and_decimate(v: np.ndarray, f: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    import pymeshlab
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=v.astype(np.float64), face_matrix=f.astype(np.int32)))
    ms.meshing_remove_duplicate_vertices()
    ms.meshing_remove_null_faces()
    ms.meshing_remove_connected_component_by_face_number(mincomponentsize=max(10, len(f) // 1000))
    ms.meshing_remove_unreferenced_vertices()
    if ms.current_mesh().face_number() > target_faces:
        ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(target_faces), preservenormal=True,
                                                    preservetopology=True, planarquadric=True)
    m = ms.current_mesh()
    return m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int32)


def _outside(inside: np.ndarray) -> np.ndarray:
    """The space reachable from the grid's corner without crossing the surface, where gaps in thin shells up to
    2 x SEAL_VOXELS wide count as closed: flood fill around the dilated surface, then grow back to it."""
    sealed = ndimage.binary_dilation(inside, iterations=SEAL_VOXELS)
    labels, _ = ndimage.label(~sealed)
    outside = labels == labels[0, 0, 0]
    return ndimage.binary_dilation(outside, iterations=SEAL_VOXELS) & ~inside


def extract_mesh(g: Gaussians, resolution: int = 128, level: float = 0.5, target_faces: int = 20_000) -> ExtractedMesh:
    from skimage.measure import marching_cubes
    density, origin, voxel = density_grid(g, resolution)
    field = np.pad(density, SEAL_VOXELS + 1)                                              # closed at the border
    inside = field > level
    voids = ~inside & ~_outside(inside)
    field = np.where(voids, 2 * level, field)
    if not (field > level).any():
        raise ValueError(f"mesh extraction: the splat's density never reaches {level} (too transparent or too sparse)")
    verts, faces, _, _ = marching_cubes(field, level)
    verts = (verts - SEAL_VOXELS - 1) * voxel + origin
    verts, faces = _clean_and_decimate(verts, faces[:, ::-1], target_faces)   # outward-facing winding
    return ExtractedMesh(verts, faces, vertex_colors(g, verts))


def vertex_colors(g: Gaussians, vertices: np.ndarray, k: int = 4) -> np.ndarray:
    dist, idx = cKDTree(g.means.cpu().numpy()).query(vertices, k=k)
    w = 1.0 / (dist + 1e-8)
    w /= w.sum(1, keepdims=True)
    rgb = g.rgb.clamp(0, 1).cpu().numpy()
    return np.einsum("vk,vkc->vc", w, rgb[idx]).astype(np.float32)


def deform_vertices(vertices: np.ndarray, animated: AnimatedGaussians, k: int = 8, chunk_frames: int = 4) -> Tensor:
    """vertices (V, 3) on the canonical splat -> (T, V, 3) following the Gaussians' motion."""
    can = animated.canonical
    means0 = can.means.float().cpu()
    dist, idx = cKDTree(means0.numpy()).query(vertices, k=k)
    idx = torch.as_tensor(idx)
    w = can.opacities.float().cpu()[idx] / torch.as_tensor(dist + 1e-6, dtype=torch.float32)
    w = w / w.sum(1, keepdim=True)                                                         # (V, k)
    v = torch.as_tensor(vertices, dtype=torch.float32)
    local = v[:, None, :] - means0[idx]                                                     # (V, k, 3)
    r0 = quat_to_rotmat(can.quats.float().cpu())[idx]                                       # (V, k, 3, 3)
    local0 = torch.einsum("vkji,vkj->vki", r0, local)                                       # R_0^T (v - mu_0)
    out = []
    positions = animated.positions.float().cpu()
    quats = animated.quats.float().cpu() if animated.quats is not None else None
    for t0 in range(0, positions.shape[0], chunk_frames):
        mu = positions[t0:t0 + chunk_frames][:, idx]                                       # (t, V, k, 3)
        if quats is None:
            moved = mu + local[None]
        else:
            rt = quat_to_rotmat(quats[t0:t0 + chunk_frames][:, idx])                        # (t, V, k, 3, 3)
            moved = mu + torch.einsum("tvkij,vkj->tvki", rt, local0)
        out.append(torch.einsum("vk,tvkc->tvc", w, moved))
    return torch.cat(out)
