"""What an export starts from: the imported object's `.gvf4d` file, its frame range and where it sits in the scene."""
from __future__ import annotations

import bpy
import numpy as np

from .. import paths
from ..result_file import GVF4DFile


def frame_range(obj) -> tuple[int, int]:
    """The scene frames the object plays its result on (first, last)."""
    start = int(obj.get("gvf4d_frame_start", bpy.context.scene.frame_start))
    return start, start + (int(obj.get("gvf4d_frames", 1)) - 1) * int(obj.get("gvf4d_frame_step", 1))


def is_deformed_mesh(obj) -> bool:
    """True for an object imported as the deformed mesh (it has faces), False for the splat's points."""
    return len(obj.data.polygons) > 0


def open_result(obj) -> GVF4DFile:
    """The result the object was imported from (`gvf4d_path`, possibly '//…' relative to the .blend), checked to
    hold as many Gaussians (or mesh vertices) and frames as the object."""
    stored = obj.get("gvf4d_path")
    if not isinstance(stored, str):
        raise ValueError(f"{obj.name} was not imported from a .gvf4d result (it has no gvf4d_path)")
    f = GVF4DFile(paths.to_absolute(stored))
    if is_deformed_mesh(obj):
        points, what = f.dims.get("V"), "mesh vertices"
    else:
        points, what = f.num_gaussians, "Gaussians"
    if points != len(obj.data.vertices) or f.num_frames != int(obj.get("gvf4d_frames", f.num_frames)):
        raise ValueError(f"{f.path} holds {points} {what} over {f.num_frames} frames but {obj.name} has "
                         f"{len(obj.data.vertices)} points over {obj.get('gvf4d_frames')} frames: the file was "
                         "replaced after the import; import it again")
    return f


def scene_matrix(obj) -> np.ndarray:
    """(4, 4) float64: the result's coordinates -> the scene's, as the object sits now (its world matrix)."""
    return np.array(obj.matrix_world, dtype=np.float64)
