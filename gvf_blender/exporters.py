"""glTF and Alembic export of an imported result, over the frame range it was imported at."""
from __future__ import annotations

import bpy


def _only_selected(obj):
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def frame_range(obj) -> tuple[int, int]:
    start = int(obj.get("gvf4d_frame_start", bpy.context.scene.frame_start))
    return start, start + int(obj.get("gvf4d_frames", 1)) - 1


def _without_splat_instancing(obj):
    """Exports take the shape-key-animated points, not the instanced ellipsoids."""
    mod = obj.modifiers.get("GVF4D Splats")
    state = None if mod is None else (mod.show_viewport, mod.show_render)
    if mod is not None:
        mod.show_viewport = mod.show_render = False
    return mod, state


def _restore(mod, state):
    if mod is not None:
        mod.show_viewport, mod.show_render = state


def export_gltf(obj, path: str) -> str:
    """GLB with morph targets (one per frame) and their weights animation; points kept (use_mesh_vertices)."""
    _only_selected(obj)
    scene = bpy.context.scene
    old = scene.frame_start, scene.frame_end
    scene.frame_start, scene.frame_end = frame_range(obj)
    mod, state = _without_splat_instancing(obj)
    try:
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True, use_mesh_vertices=True,
                                  export_morph=True, export_morph_normal=False, export_morph_animation=True,
                                  export_animations=True, export_apply=False, export_vertex_color="NONE")
    finally:
        _restore(mod, state)
        scene.frame_start, scene.frame_end = old
    return str(path)


def export_alembic(obj, path: str) -> str:
    _only_selected(obj)
    start, end = frame_range(obj)
    mod, state = _without_splat_instancing(obj)
    try:
        bpy.ops.wm.alembic_export(filepath=str(path), start=start, end=end, selected=True, uvs=False, normals=False,
                                  evaluation_mode="VIEWPORT")
    finally:
        _restore(mod, state)
    return str(path)
