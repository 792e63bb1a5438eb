"""The animated splat as a 3DGS PLY sequence: one binary PLY per frame in the standard (INRIA 3DGS) layout, the
layout of the backend's writer (backend/gvf4d/exporters/ply.py).

Properties, all float32: x y z, nx ny nz (zero), f_dc_0..2, f_rest_0..44 (channel-major: every red coefficient
first; zero where the file has fewer bands), opacity (logit), scale_0..2 (log), rot_0..3 (w x y z, unit).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import source
from ..atomic_file import atomic_output
from .splat import Similarity, Splat

PLY_SH_COEFFICIENTS = 15   # bands 1-3: viewers built on the reference 3DGS code expect 45 f_rest properties


def ply_properties(num_rest: int = PLY_SH_COEFFICIENTS) -> list[str]:
    """The vertex properties in file order, for `num_rest` SH coefficients above DC."""
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
            *(f"f_rest_{i}" for i in range(3 * num_rest)), "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def splat_ply_bytes(splat: Splat) -> bytes:
    """A binary little-endian 3DGS PLY of the splat."""
    n = len(splat)
    k = max(PLY_SH_COEFFICIENTS, 0 if splat.sh_rest is None else splat.sh_rest.shape[1])
    names = ply_properties(k)
    columns = np.zeros((n, len(names)), "<f4")                  # normals and missing bands stay zero
    columns[:, 0:3] = splat.position
    columns[:, 6:9] = splat.sh_dc
    if splat.sh_rest is not None:
        rest = np.zeros((n, 3, k), np.float32)                      # channel-major
        rest[:, :, :splat.sh_rest.shape[1]] = splat.sh_rest.transpose(0, 2, 1)
        columns[:, 9:9 + 3 * k] = rest.reshape(n, 3 * k)
    opacity = np.clip(splat.opacity.astype(np.float64), 1e-6, 1 - 1e-6)
    columns[:, 9 + 3 * k] = np.log(opacity / (1 - opacity))
    columns[:, 10 + 3 * k:13 + 3 * k] = np.log(np.clip(splat.scale.astype(np.float64), 1e-12, None))
    columns[:, 13 + 3 * k:] = splat.normalised().rotation
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {n}",
                        *(f"property float {name}" for name in names), "end_header"]) + "\n"
    return header.encode("ascii") + columns.tobytes()


def sequence_paths(path, frames) -> list[Path]:
    """The files of a sequence named after `path`: NAME_0001.ply, … numbered by scene frame."""
    path = Path(path)
    return [path.with_name(f"{path.stem}_{frame:04d}.ply") for frame in frames]


def export_ply_sequence(obj, path) -> list[str]:
    """One 3DGS PLY per frame of the object's result, read from its `.gvf4d` file and placed as the object sits
    in the scene (its world matrix baked in); the files are numbered by the scene frame each frame plays on.
    Returns the paths written."""
    f = source.open_result(obj)
    move = Similarity.from_matrix(source.scene_matrix(obj))
    start, end = source.frame_range(obj)
    paths = sequence_paths(path, range(start, end + 1, int(obj.get("gvf4d_frame_step", 1))))
    for t, frame_path in enumerate(paths):
        with atomic_output(frame_path) as out:
            out.write(splat_ply_bytes(move.apply(Splat.at_frame(f, t))))
    return [str(p) for p in paths]
