"""The artist's own object as the canonical: written as a GLB (Blender's glTF exporter: geometry, UVs, base-colour
texture or vertex colours) that the backend samples into Gaussians (`--canonical mesh`)."""
from __future__ import annotations

from pathlib import Path

import bpy


def export_object_glb(obj: bpy.types.Object, path: str | Path) -> Path:
    """Writes obj (a mesh object, its modifiers applied, world transform included) alone to path (.glb)."""
    if obj is None or obj.type != "MESH":
        raise ValueError("select a mesh object to use as the canonical (or pick another canonical source)")
    if len(obj.data.polygons) == 0:
        raise ValueError(f"object '{obj.name}' has no faces; the canonical needs a surface mesh")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    selected = [o for o in bpy.context.view_layer.objects if o.select_get()]
    active = bpy.context.view_layer.objects.active
    try:
        for o in selected:
            o.select_set(False)
        obj.select_set(True)
        bpy.context.view_layer.objects.active = obj
        result = bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True,
                                           export_apply=True, export_animations=False)
    finally:
        obj.select_set(False)
        for o in selected:
            o.select_set(True)
        bpy.context.view_layer.objects.active = active
    if result != {"FINISHED"} or not path.is_file():
        raise RuntimeError(f"exporting '{obj.name}' to {path} failed")
    return path
