"""Building Blender objects from a .gvf4d result: plain functions over bpy, testable without the UI.

Splats: one mesh object whose points are the Gaussians, at the canonical positions (the result's space; what the
artist edits) also kept as `gvf_canonical_p`. Canonical attributes `color` (the SH-DC colour 0.5 + 0.28209479·sh_dc,
display values), `opacity`, `scale`, `rotation`, the SH bands above DC as `sh_rest_01`..; every frame of every
track the file has as `gvf_p_0000`.. (position), `gvf_r_` (rotation), `gvf_s_` (scale), `gvf_o_` (opacity),
`gvf_c_` (colour), or, for long shots, referenced in the result's frame folder (frame_cache.py). Two geometry-nodes
modifiers: "GVF4D Animation" blends the tracks at the
scene frame (splat_nodes.animation_group), "GVF4D Splats" draws the Gaussians as camera-facing quads with the
3DGS falloff or as coloured points. The object sits where `placement` puts it (placement.py).
Deformed mesh: the result's extracted mesh with vertex colours (linear), animated by shape keys.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import frame_cache, paths, splat_nodes
from . import placement as placements
from .color_space import srgb_to_linear
from .result_file import GVF4DFile

ANIMATION_MODIFIER = "GVF4D Animation"
DISPLAY_MODIFIER = "GVF4D Splats"
DISPLAYS = ("splat", "points")
FRAME_DATA = ("AUTO", "EMBEDDED", "REFERENCED")
EMBED_LIMIT = 512 * 2**20


def _set_attr(mesh, name: str, kind: str, field: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name) or mesh.attributes.new(name=name, type=kind, domain="POINT")
    attr.data.foreach_set(field, np.ascontiguousarray(values, dtype=np.int32 if kind == "INT" else np.float32).ravel())


def canonical_attributes(f: GVF4DFile) -> dict[str, tuple[str, str, np.ndarray]]:
    """The canonical splat as the import stores it on the points: attribute name -> (type, foreach field, values
    (N, ...) float32). The base positions start as the `gvf_canonical_p` values."""
    n = f.num_gaussians
    rgb = frame_cache.display_rgb(f.array("canonical.sh_dc"))
    attributes = {
        splat_nodes.CANONICAL_POSITION_ATTRIBUTE: ("FLOAT_VECTOR", "vector",
                                                   np.asarray(f.array("canonical.position"), np.float32)),
        "color": ("FLOAT_COLOR", "color", np.concatenate([rgb, np.ones((n, 1), np.float32)], 1)),
        "opacity": ("FLOAT", "value", np.asarray(f.array("canonical.opacity"), np.float32)),
        "scale": ("FLOAT_VECTOR", "vector", np.asarray(f.array("canonical.scale"), np.float32)),
        "rotation": ("QUATERNION", "value", frame_cache.unit_quaternions(f.array("canonical.rotation"))),
    }
    if f.has("canonical.sh_rest"):
        sh_rest = np.asarray(f.array("canonical.sh_rest"), np.float32)
        for k in range(min(sh_rest.shape[1], 15)):
            attributes[splat_nodes.SH_REST_ATTRIBUTE.format(k + 1)] = ("FLOAT_VECTOR", "vector", sh_rest[:, k])
    return attributes


def frame_step(f: GVF4DFile) -> int:
    """Scene frames between two result frames: the footage's stride (result frame t plays on scene frame
    start + t * step, so each lands on its source frame's scene frame; frames between them blend)."""
    return max(1, int((f.metadata.get("footage") or {}).get("stride", 1)))


def _write_tracks(mesh, f: GVF4DFile) -> None:
    """Every frame of every track the file has, as point attributes."""
    for track in frame_cache.tracks_of(f):
        kind = splat_nodes.TRACKS[track][2]
        field = "vector" if kind == "FLOAT_VECTOR" else "value"
        for t in range(f.num_frames):
            _set_attr(mesh, splat_nodes.track_attribute(track, t), kind, field, frame_cache.frame_values(f, track, t))


def references_frames(f: GVF4DFile, frame_data: str) -> bool:
    """Whether the import references the tracks in a frame folder rather than embedding them: 'REFERENCED',
    'EMBEDDED', or 'AUTO' (referenced past EMBED_LIMIT bytes, e.g. 200k Gaussians × 48 frames)."""
    if frame_data not in FRAME_DATA:
        raise ValueError(f"frame_data {frame_data!r} is not one of {FRAME_DATA}")
    return frame_data == "REFERENCED" or frame_data == "AUTO" and frame_cache.track_bytes(f) > EMBED_LIMIT


def import_splats(path, name: str | None = None, frame_start: int = 1, display: str = "splat", collection=None,
                  placement: str = "AUTO", frame_data: str = "AUTO", progress=None):
    """The result as animated splats. Returns the new object.

    display: "splat" (Gaussian quads facing the active camera) or "points" (a coloured point cloud).
    placement: "AUTO", "ASSET" (where the artist's mesh or splat was) or "ORIGIN" (placement.py).
    frame_data: "EMBEDDED" (the tracks as point attributes in the .blend), "REFERENCED" (in the result's frame
    folder, `frame_cache`, written now unless current) or "AUTO" (`references_frames`). progress(t, T) follows
    the frame folder's writing.
    """
    if display not in DISPLAYS:
        raise ValueError(f"display {display!r} is not one of {DISPLAYS}")
    f = GVF4DFile(path)
    referenced = references_frames(f, frame_data)
    if referenced:
        frame_cache.write(f, progress=progress)
    name = name or Path(path).stem
    N, T = f.num_gaussians, f.num_frames
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(N)
    canonical = canonical_attributes(f)
    mesh.vertices.foreach_set("co", canonical[splat_nodes.CANONICAL_POSITION_ATTRIBUTE][2].ravel())
    for attribute, (kind, field, values) in canonical.items():
        _set_attr(mesh, attribute, kind, field, values)
    if referenced:
        _set_attr(mesh, splat_nodes.FRAME_ROW_ATTRIBUTE, "INT", "value", np.arange(N))
    else:
        _write_tracks(mesh, f)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj.matrix_world = Matrix(placements.object_matrix(f.metadata, placement).tolist())
    obj["gvf4d_path"] = str(path)
    obj["gvf4d_frames"] = T
    obj["gvf4d_frame_start"] = frame_start
    obj["gvf4d_frame_step"] = frame_step(f)
    obj["gvf4d_placement"] = placements.resolve(f.metadata, placement)
    obj["gvf4d_frame_data"] = "REFERENCED" if referenced else "EMBEDDED"
    animation = obj.modifiers.new(ANIMATION_MODIFIER, "NODES")
    animation.node_group = (splat_nodes.referenced_animation_group() if referenced
                            else splat_nodes.animation_group())
    if referenced:
        refer_frames(obj, path)
        tracks = frame_cache.tracks_of(f)
        for track in splat_nodes.TRACKS:
            if track != "position":
                splat_nodes.set_group_input(animation, f"Has {track.title()}", track in tracks)
    splat_nodes.set_group_input(animation, "Start Frame", frame_start)
    splat_nodes.set_group_input(animation, "Frames", T)
    splat_nodes.set_group_input(animation, "Frame Step", obj["gvf4d_frame_step"])
    set_display(obj, display)
    return obj


def refer_frames(obj, result, blend: str | None = None) -> None:
    """Points a referenced import's animation at the frame folder of its result file `result` (the path stored
    for the .blend `blend`, the open one when left out); embedded imports are left as they are."""
    animation = obj.modifiers.get(ANIMATION_MODIFIER)
    if obj.get("gvf4d_frame_data") == "REFERENCED" and animation is not None and animation.node_group is not None:
        splat_nodes.set_group_input(animation, "Frame Folder", paths.to_stored(frame_cache.folder_for(result), blend))


def frame_folder(obj) -> Path | None:
    """The absolute frame folder a referenced import reads its frames from; None for an embedded one (or one
    whose animation modifier the artist removed)."""
    animation = obj.modifiers.get(ANIMATION_MODIFIER)
    if obj.get("gvf4d_frame_data") != "REFERENCED" or animation is None or animation.node_group is None:
        return None
    return paths.to_absolute(splat_nodes.group_input(animation, "Frame Folder"))


def set_display(obj, display: str) -> None:
    """'splat' (Gaussian quads) or 'points' (coloured points): the node group of the display modifier."""
    if display not in DISPLAYS:
        raise ValueError(f"display {display!r} is not one of {DISPLAYS}")
    mod = obj.modifiers.get(DISPLAY_MODIFIER) or obj.modifiers.new(DISPLAY_MODIFIER, "NODES")
    mod.node_group = splat_nodes.splat_group() if display == "splat" else splat_nodes.points_group()
    if display == "splat":
        splat_nodes.set_group_input(mod, "View-dependent Colour",
                                    splat_nodes.SH_REST_ATTRIBUTE.format(1) in obj.data.attributes)


def hide_take(obj) -> None:
    """Hides a take's object in viewports and renders (when a newer take of its shot is imported); hidden
    objects are not evaluated, so they cost nothing while scrubbing."""
    obj.hide_viewport = obj.hide_render = True


def _add_shape_key_animation(obj, positions_by_frame, frame_start: int, step: int = 1) -> None:
    """positions_by_frame: callable t -> (V, 3) float32; keys frame_0000.. with one-hot keyframed values, key t
    on scene frame frame_start + t * step."""
    T = obj["gvf4d_frames"]
    basis = obj.shape_key_add(name="Basis", from_mix=False)
    basis.data.foreach_set("co", positions_by_frame(0).ravel())
    for t in range(T):
        kb = obj.shape_key_add(name=f"frame_{t:04d}", from_mix=False)
        kb.data.foreach_set("co", positions_by_frame(t).ravel())
        kb.slider_min, kb.slider_max = 0.0, 1.0
        frame = frame_start + t * step
        for f, v in ((frame - step, 0.0), (frame, 1.0), (frame + step, 0.0)):
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


def import_mesh(path, name: str | None = None, frame_start: int = 1, collection=None, placement: str = "AUTO"):
    """The result's extracted mesh, vertex-coloured and animated per frame, placed as import_splats does."""
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
    colors = srgb_to_linear(f.array("mesh.colors"))      # display values; colour attributes hold linear ones
    _set_attr(mesh, "color", "FLOAT_COLOR", "color", np.concatenate([colors, np.ones((len(colors), 1), np.float32)], 1))
    mesh.update()
    mesh.validate()
    obj = bpy.data.objects.new(name, mesh)
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj.matrix_world = Matrix(placements.object_matrix(f.metadata, placement).tolist())
    obj["gvf4d_path"] = str(path)
    obj["gvf4d_frames"] = f.num_frames
    obj["gvf4d_frame_start"] = frame_start
    obj["gvf4d_frame_step"] = frame_step(f)
    _add_shape_key_animation(obj, lambda t: f.frame("frames.mesh_vertices", t), frame_start, obj["gvf4d_frame_step"])
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
