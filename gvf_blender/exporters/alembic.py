"""Alembic export of an imported result through Blender's Alembic exporter, over the object's frame range.

What that exporter carries, checked by reading its files back with Blender's Alembic importer (Blender 5.0.1):
the object's transform, its points' positions every frame, and a point attribute named `velocity` (Alembic's
velocities). Colours are written only as byte colours on face corners, so a deformed mesh keeps its vertex
colours (8 bits) and the splat's points, which have no faces, lose theirs; opacity, scale, rotation and the SH
bands are not written, and point clouds are not exported at all. So the splat exports as its animated centres
with their velocities (for motion blur in other packages), the mesh with its vertex colours. Each is added by a
temporary geometry-nodes modifier, removed after the export; the splat display is switched off meanwhile.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import bpy

from .. import importer, splat_nodes
from . import source

VELOCITY_GROUP = "GVF4D Export Velocity"
CORNER_COLOUR_GROUP = "GVF4D Export Corner Colour"
EXPORT_MODIFIER = "GVF4D Export"


def _velocity_group(fps: float, referenced: bool):
    """Stores `velocity` (m/s): the step from the scene frame's result frame to the next (at the last frame,
    from the one before), times the scene's frame rate over the frame step (result frame t plays on scene frame
    start + t * step, importer.frame_step); reads the per-frame positions (gvf_p_0000.., or with `referenced`
    the frame folder's files), so it runs before the animation modifier."""
    folder = [("Frame Folder", "NodeSocketString", "", None)] if referenced else []
    ng, _ = splat_nodes.new_node_group(VELOCITY_GROUP, splat_nodes.ANIMATION_INPUTS + folder)
    ng.nodes.clear()
    b = splat_nodes.NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    frames, step = gin.outputs["Frames"], gin.outputs["Frame Step"]
    f = b.math("DIVIDE", b.math("SUBTRACT", b.add("GeometryNodeInputSceneTime").outputs["Frame"],
                                gin.outputs["Start Frame"]), step)
    t0 = b.math("MINIMUM", b.math("MAXIMUM", b.math("FLOOR", f), 0.0),
                b.math("MAXIMUM", b.math("SUBTRACT", frames, 2.0), 0.0))
    t1 = b.math("MINIMUM", b.math("ADD", t0, 1.0), b.math("SUBTRACT", frames, 1.0))

    folder = gin.outputs["Frame Folder"] if referenced else None
    p0, p1 = (splat_nodes.frame_position(b, t, folder) for t in (t0, t1))
    velocity = b.vec("SCALE", b.vec("SUBTRACT", p1, p0), scale=b.math("DIVIDE", fps, step))
    b.tree.links.new(b.store(gin.outputs[0], "POINT", "FLOAT_VECTOR", "velocity", velocity), gout.inputs[0])
    return ng


def _corner_colour_group():
    """Stores the point colour `color` as byte colours on the face corners, the form the exporter writes."""
    ng, _ = splat_nodes.new_node_group(CORNER_COLOUR_GROUP)
    ng.nodes.clear()
    b = splat_nodes.NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    colour = b.named("FLOAT_COLOR", "color")[0]
    b.tree.links.new(b.store(gin.outputs[0], "CORNER", "BYTE_COLOR", "color", colour), gout.inputs[0])
    return ng


@contextlib.contextmanager
def _prepared(obj, as_mesh: bool):
    """The object with its export modifier in place and the splat display off; all undone afterwards."""
    display = obj.modifiers.get(importer.DISPLAY_MODIFIER)
    shown = None if display is None else (display.show_viewport, display.show_render)
    animation = obj.modifiers.find(importer.ANIMATION_MODIFIER)
    if as_mesh:
        group = _corner_colour_group()
    elif animation >= 0:
        render = bpy.context.scene.render
        referenced = obj.get("gvf4d_frame_data") == "REFERENCED"
        group = _velocity_group(render.fps / render.fps_base, referenced)
    else:
        group = None        # points animated some other way: positions only
    modifier = None
    try:
        if display is not None:
            display.show_viewport = display.show_render = False
        if group is not None:
            modifier = obj.modifiers.new(EXPORT_MODIFIER, "NODES")
            modifier.node_group = group
            if not as_mesh:
                splat_nodes.set_group_input(modifier, "Start Frame", int(obj["gvf4d_frame_start"]))
                splat_nodes.set_group_input(modifier, "Frames", int(obj["gvf4d_frames"]))
                splat_nodes.set_group_input(modifier, "Frame Step", int(obj.get("gvf4d_frame_step", 1)))
                if referenced:
                    splat_nodes.set_group_input(modifier, "Frame Folder", splat_nodes.group_input(
                        obj.modifiers[animation], "Frame Folder"))
                obj.modifiers.move(len(obj.modifiers) - 1, animation)
        yield
    finally:
        if modifier is not None:
            obj.modifiers.remove(modifier)
        if group is not None:
            bpy.data.node_groups.remove(group)
        if display is not None:
            display.show_viewport, display.show_render = shown


@contextlib.contextmanager
def _only_selected(obj):
    """The object alone selected and active (the exporter writes the selection); the selection restored after."""
    layer = bpy.context.view_layer
    selected, active = [o for o in layer.objects if o.select_get()], layer.objects.active
    try:
        for o in selected:
            o.select_set(False)
        obj.select_set(True)
        layer.objects.active = obj
        yield
    finally:
        obj.select_set(False)
        for o in selected:
            o.select_set(True)
        layer.objects.active = active


def export_alembic(obj, path) -> str:
    """The object over its frame range as Alembic: the splat's centres and velocities, or the deformed mesh with
    its vertex colours (see the module's notes for what Blender's exporter drops)."""
    start, end = source.frame_range(obj)
    as_mesh = source.is_deformed_mesh(obj)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _only_selected(obj), _prepared(obj, as_mesh):
        result = bpy.ops.wm.alembic_export(filepath=str(path), start=start, end=end, selected=True, uvs=False,
                                           normals=False, vcolors=as_mesh, evaluation_mode="VIEWPORT")
    if result != {"FINISHED"}:
        raise OSError(f"{path}: Blender's Alembic exporter could not write the file (its message is in the console)")
    return str(path)
