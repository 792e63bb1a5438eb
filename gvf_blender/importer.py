"""Building Blender objects from a .gvf4d result: plain functions over bpy, testable without the UI.

Keyframed splats: one mesh object whose points are the Gaussians (attributes: color, opacity, scale,
rotation), moved per frame by shape keys (frame t = key "frame_tttt", value 1 on its frame, 0 on the
neighbouring frames, linear between). Shading: a geometry-nodes modifier instances an oriented, scaled
ellipsoid on every point and a material fades it by the Gaussian's opacity (EEVEE and Cycles); `display
"points"` skips the instancing for heavy scenes.
Deformed mesh: the result's extracted mesh with vertex colours, animated the same way.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from .result_file import GVF4DFile

SH_C0 = 0.28209479177387814
NODE_GROUP = "GVF4D Splat"
MATERIAL = "GVF4D Splat Material"
SPLAT_SIGMAS = 2.0   # the instanced ellipsoid's radii, in standard deviations


def _frame_track(f: GVF4DFile, name: str, canonical: str, t: int) -> np.ndarray:
    return f.frame(name, t) if f.has(name) else np.asarray(f.array(canonical), dtype=np.float32)


def _add_shape_key_animation(obj, positions_by_frame, frame_start: int) -> None:
    """positions_by_frame: callable t -> (V, 3) float32; keys frame_0000.. with one-hot keyframed values."""
    T = obj["gvf4d_frames"]
    basis = obj.shape_key_add(name="Basis", from_mix=False)
    basis.data.foreach_set("co", positions_by_frame(0).ravel())
    for t in range(T):
        kb = obj.shape_key_add(name=f"frame_{t:04d}", from_mix=False)
        kb.data.foreach_set("co", positions_by_frame(t).ravel())
        kb.slider_min, kb.slider_max = 0.0, 1.0
        frame = frame_start + t
        for f, v in ((frame - 1, 0.0), (frame, 1.0), (frame + 1, 0.0)):
            if t == 0 and f < frame or t == T - 1 and f > frame:
                continue   # hold the first and last frames outside the range
            kb.value = v
            kb.keyframe_insert("value", frame=f)
    for fc in _fcurves(obj.data.shape_keys):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"


def _fcurves(id_data):
    """The F-curves of an ID's action (layered actions in Blender 4.4+, legacy before)."""
    action = id_data.animation_data.action
    try:
        from bpy_extras.anim_utils import action_get_channelbag_for_slot
        bag = action_get_channelbag_for_slot(action, id_data.animation_data.action_slot)
        return list(bag.fcurves) if bag else []
    except ImportError:
        return list(action.fcurves)


def _set_attr(mesh, name: str, kind: str, field: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name) or mesh.attributes.new(name=name, type=kind, domain="POINT")
    attr.data.foreach_set(field, np.ascontiguousarray(values, dtype=np.float32).ravel())


def import_splats(path, name: str | None = None, frame_start: int = 1, display: str = "splat",
                  collection=None):
    """The result as keyframed splats. Returns the new object."""
    f = GVF4DFile(path)
    name = name or Path(path).stem
    N, T = f.num_gaussians, f.num_frames
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(N)
    pos0 = f.frame("frames.position", 0)
    mesh.vertices.foreach_set("co", pos0.ravel())
    sh = np.asarray(f.array("canonical.sh_dc"), dtype=np.float32)
    rgb = np.clip(0.5 + SH_C0 * sh, 0.0, 1.0)
    opacity = np.asarray(f.array("canonical.opacity"), dtype=np.float32)
    _set_attr(mesh, "color", "FLOAT_COLOR", "color", np.concatenate([rgb, opacity[:, None]], 1))
    _set_attr(mesh, "opacity", "FLOAT", "value", opacity)
    _set_attr(mesh, "scale", "FLOAT_VECTOR", "vector", _frame_track(f, "frames.scale", "canonical.scale", 0))
    _set_attr(mesh, "rotation", "QUATERNION", "value", _frame_track(f, "frames.rotation", "canonical.rotation", 0))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj["gvf4d_path"] = str(path)
    obj["gvf4d_frames"] = T
    obj["gvf4d_frame_start"] = frame_start
    _add_shape_key_animation(obj, lambda t: f.frame("frames.position", t), frame_start)
    if display == "splat":
        add_splat_shading(obj)
    return obj


def import_mesh(path, name: str | None = None, frame_start: int = 1, collection=None):
    """The result's extracted mesh, vertex-coloured and animated per frame."""
    f = GVF4DFile(path)
    if not f.has("mesh.vertices"):
        raise ValueError(f"{path}: this result holds no extracted mesh; import it as splats")
    name = name or Path(path).stem + "_mesh"
    verts = np.asarray(f.array("mesh.vertices"), dtype=np.float32)
    faces = np.asarray(f.array("mesh.faces"), dtype=np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    colors = np.asarray(f.array("mesh.colors"), dtype=np.float32)
    _set_attr(mesh, "color", "FLOAT_COLOR", "color", np.concatenate([colors, np.ones((len(colors), 1), np.float32)], 1))
    mesh.update()
    mesh.validate()
    obj = bpy.data.objects.new(name, mesh)
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj["gvf4d_path"] = str(path)
    obj["gvf4d_frames"] = f.num_frames
    obj["gvf4d_frame_start"] = frame_start
    _add_shape_key_animation(obj, lambda t: f.frame("frames.mesh_vertices", t), frame_start)
    obj.data.materials.append(_vertex_colour_material())
    return obj


def _ensure_nodes(mat) -> None:
    """Blender 5 materials always have a node tree; 4.x ones need use_nodes switched on."""
    if mat.node_tree is None:
        mat.use_nodes = True


def _vertex_colour_material():
    mat = bpy.data.materials.get("GVF4D Mesh Material")
    if mat:
        return mat
    mat = bpy.data.materials.new("GVF4D Mesh Material")
    _ensure_nodes(mat)
    nt = mat.node_tree
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "color"
    bsdf = nt.nodes.get("Principled BSDF")
    nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def splat_material():
    mat = bpy.data.materials.get(MATERIAL)
    if mat:
        return mat
    mat = bpy.data.materials.new(MATERIAL)
    _ensure_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    emit = nt.nodes.new("ShaderNodeEmission")
    transparent = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    colour = nt.nodes.new("ShaderNodeAttribute")
    colour.attribute_name, colour.attribute_type = "color", "INSTANCER"
    opacity = nt.nodes.new("ShaderNodeAttribute")
    opacity.attribute_name, opacity.attribute_type = "opacity", "INSTANCER"
    # fade towards the ellipsoid's rim (facing ratio), scaled by the Gaussian's opacity
    layer = nt.nodes.new("ShaderNodeLayerWeight")
    fade = nt.nodes.new("ShaderNodeMath")
    fade.operation = "MULTIPLY"
    rim = nt.nodes.new("ShaderNodeMath")
    rim.operation = "SUBTRACT"
    rim.inputs[0].default_value = 1.0
    nt.links.new(layer.outputs["Facing"], rim.inputs[1])
    nt.links.new(rim.outputs[0], fade.inputs[0])
    nt.links.new(opacity.outputs["Fac"], fade.inputs[1])
    nt.links.new(colour.outputs["Color"], emit.inputs["Color"])
    nt.links.new(fade.outputs[0], mix.inputs["Fac"])
    nt.links.new(transparent.outputs[0], mix.inputs[1])
    nt.links.new(emit.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED"
    return mat


def splat_node_group():
    ng = bpy.data.node_groups.get(NODE_GROUP)
    if ng:
        return ng
    ng = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n = ng.nodes
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    inst = n.new("GeometryNodeInstanceOnPoints")
    sphere = n.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value = SPLAT_SIGMAS
    sphere.inputs["Subdivisions"].default_value = 1
    scale = n.new("GeometryNodeInputNamedAttribute")
    scale.data_type, scale.inputs["Name"].default_value = "FLOAT_VECTOR", "scale"
    rot = n.new("GeometryNodeInputNamedAttribute")
    rot.data_type, rot.inputs["Name"].default_value = "QUATERNION", "rotation"
    setmat = n.new("GeometryNodeSetMaterial")
    setmat.inputs["Material"].default_value = splat_material()
    ng.links.new(gin.outputs[0], inst.inputs["Points"])
    ng.links.new(sphere.outputs["Mesh"], setmat.inputs["Geometry"])
    ng.links.new(setmat.outputs["Geometry"], inst.inputs["Instance"])
    ng.links.new(scale.outputs["Attribute"], inst.inputs["Scale"])
    ng.links.new(rot.outputs["Attribute"], inst.inputs["Rotation"])
    ng.links.new(inst.outputs["Instances"], gout.inputs[0])
    return ng


def add_splat_shading(obj):
    mod = obj.modifiers.new("GVF4D Splats", "NODES")
    mod.node_group = splat_node_group()
    return mod


def set_display(obj, display: str) -> None:
    """'splat' (instanced ellipsoids) or 'points' (cheap point display)."""
    mod = obj.modifiers.get("GVF4D Splats")
    if display == "splat" and mod is None:
        add_splat_shading(obj)
    elif mod is not None:
        mod.show_viewport = mod.show_render = display == "splat"
