"""Exports of an imported result, each read from the `.gvf4d` file the object came from (not from the viewport
geometry, so the splat's values travel exactly), except Alembic, which goes through Blender's exporter.

FORMATS lists them in the order the export dialog shows, with what each keeps and drops.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .alembic import export_alembic
from .gltf import export_gltf, export_gltf_splat
from .ply import export_ply_sequence
from .source import frame_range


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    label: str
    extension: str
    keeps: str
    drops: str
    export: Callable       # (obj, path) -> the path written, or the list of paths of a sequence


FORMATS = {
    "PLY": ExportFormat("3DGS PLY sequence (.ply)", ".ply", "every Gaussian attribute, every frame",
                        "nothing; one standard 3DGS PLY per frame, NAME_0001.ply, ...", export_ply_sequence),
    "GLTF_SPLAT": ExportFormat("glTF Gaussian splat (.glb)", ".glb",
                               "the canonical splat with its SH colour (KHR_gaussian_splatting)",
                               "the animation", export_gltf_splat),
    "GLTF": ExportFormat("glTF morph targets (.glb)", ".glb", "positions every frame, the canonical colour",
                         "rotation, scale, opacity, SH, colour changes", export_gltf),
    "ABC": ExportFormat("Alembic (.abc)", ".abc",
                        "positions every frame, with the splat's velocities or the deformed mesh's vertex colours",
                        "the splat's colour, opacity, scale, rotation, SH (Blender's exporter cannot write them)",
                        export_alembic),
}

__all__ = ["FORMATS", "ExportFormat", "export_alembic", "export_gltf", "export_gltf_splat", "export_ply_sequence",
           "frame_range"]
