"""3D Gaussian splat PLY in the standard (INRIA 3DGS) layout.

Properties: x y z, nx ny nz, f_dc_0..2, f_rest_0..(3*K-1) (channel-major: all red coefficients first),
opacity (logit), scale_0..2 (log), rot_0..3 (w x y z). Coordinates are the result's (Blender, Z up).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..atomic import atomic_output
from ..errors import InputFileError
from ..representations import AnimatedGaussians, Gaussians

DEFAULT_SH_DEGREE = 3  # viewers built on the reference 3DGS code expect 45 f_rest properties


class SplatPlyError(InputFileError):
    """A 3DGS PLY that cannot be read as a splat."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def write_splat_ply(path: str | os.PathLike, g: Gaussians, sh_degree: int = DEFAULT_SH_DEGREE) -> Path:
    path = Path(path)
    n = len(g)
    k = (sh_degree + 1) ** 2 - 1
    rest = np.zeros((n, 3, k), np.float32)
    if g.sh_rest is not None:
        m = min(k, g.sh_rest.shape[1])
        rest[:, :, :m] = g.sh_rest[:, :m].detach().cpu().float().numpy().transpose(0, 2, 1)
    cols = {
        "x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
    }
    arrays = {name: v.detach().cpu().float().numpy() for name, v in cols.items()}
    arrays.update({"nx": np.zeros(n, np.float32), "ny": np.zeros(n, np.float32), "nz": np.zeros(n, np.float32)})
    sh_dc = g.sh_dc.detach().cpu().float().numpy()
    for i in range(3):
        arrays[f"f_dc_{i}"] = sh_dc[:, i]
    rest = rest.reshape(n, -1)
    for i in range(rest.shape[1]):
        arrays[f"f_rest_{i}"] = rest[:, i]
    arrays["opacity"] = _logit(g.opacities.detach().cpu().double().numpy())
    scales = np.log(np.clip(g.scales.detach().cpu().double().numpy(), 1e-12, None))
    quats = torch.nn.functional.normalize(g.quats.detach().cpu().float(), dim=-1).numpy()
    for i in range(3):
        arrays[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        arrays[f"rot_{i}"] = quats[:, i]
    vertex = np.empty(n, dtype=[(name, "f4") for name in arrays])
    for name, v in arrays.items():
        vertex[name] = v
    with atomic_output(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
    return path


def read_splat_ply(path: str | os.PathLike) -> Gaussians:
    """Reads a standard-layout splat PLY (any SH degree) into activated Gaussians."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except Exception as e:
        raise SplatPlyError(path, f"not a readable PLY file ({e})") from None
    if "vertex" not in ply:
        raise SplatPlyError(path, "has no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    needed = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
              "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [p for p in needed if p not in names]
    if missing:
        raise SplatPlyError(path, f"is not a 3DGS splat PLY: missing properties {missing}")
    if len(v) == 0:
        raise SplatPlyError(path, "has no Gaussians")
    col = lambda *ps: torch.from_numpy(np.stack([np.asarray(v[p], np.float32) for p in ps], -1))
    rest_names = sorted((p for p in names if p.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
    if len(rest_names) % 3:
        raise SplatPlyError(path, f"has {len(rest_names)} f_rest properties, not a multiple of 3")
    sh_rest = None
    if rest_names:
        sh_rest = col(*rest_names).reshape(len(v), 3, -1).transpose(1, 2).contiguous()
    means = col("x", "y", "z")
    scales = torch.exp(col("scale_0", "scale_1", "scale_2"))
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    opac = torch.sigmoid(col("opacity")[:, 0])
    sh_dc = col("f_dc_0", "f_dc_1", "f_dc_2")
    for name, t in (("positions", means), ("scales", scales), ("rotations", quats), ("opacities", opac), ("colours", sh_dc)):
        if not torch.isfinite(t).all():
            raise SplatPlyError(path, f"holds non-finite {name}")
    if (quats.norm(dim=-1) < 1e-12).any():
        raise SplatPlyError(path, "holds zero-length rotation quaternions")
    return Gaussians(means=means, scales=scales, quats=torch.nn.functional.normalize(quats, dim=-1),
                     opacities=opac, sh_dc=sh_dc, sh_rest=sh_rest)


def write_ply_frames(folder: str | os.PathLike, animated: AnimatedGaussians, stem: str = "frame") -> list[Path]:
    """One PLY per frame: folder/frame_0000.ply, ..."""
    folder = Path(folder)
    return [write_splat_ply(folder / f"{stem}_{t:04d}.ply", animated.frame(t)) for t in range(animated.num_frames)]
