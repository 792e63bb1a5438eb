"""Render with the backend (docs/render.md), the parts that need no operator: the Blender camera as the backend's
renderer takes it (camera JSON), the plan of a render (the result's frames under the scene's range, one camera per
frame), the job's request, the downloaded EXR sequence as an image, and the compositor that puts it over Blender's
own render by depth; the render jobs a scene waits for, kept in the .blend so they are followed again after a
reopen, and what following one does in Blender (`RenderFollower`).

The backend renders the result in its own space, and the imported object may sit anywhere (its placement, or
moved by the artist), so each camera is given relative to the object: matrix_world⁻¹ · camera.matrix_world. A
uniform scale s of the object changes no pixel but leaves the EXR's depth in the result's units: the compositor
multiplies it by s before comparing it with Blender's Z pass.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import bpy

from . import paths

RENDERS_FOLDER = "gvf4d_renders"
RENDER_JOBS = "gvf4d_render_jobs"       # scene property: JSON {job id: its plan and options} while it runs
COMPOSITOR_GROUP = "GVF4D Composite"    # the compositor node group made for a scene without one
UNIFORM_TOLERANCE = 1e-4                # relative: an object scale this close to uniform counts as uniform


def frame_file(t: int) -> str:
    """The backend's file of result frame t (0-based)."""
    return f"frame_{t:04d}.exr"


def object_scale(obj) -> float:
    """The object's uniform world scale; ValueError for a non-uniform, sheared or mirrored one, which a camera
    relative to the object could not express."""
    m = obj.matrix_world.to_3x3()
    s = m.col[0].length
    gram = m.transposed() @ m
    if s <= 0 or m.determinant() <= 0 or any(abs(gram[i][j] - (s * s if i == j else 0.0)) > UNIFORM_TOLERANCE * s * s
                                              for i in range(3) for j in range(3)):
        raise ValueError(f"{obj.name} is scaled non-uniformly, sheared or mirrored: the backend renders it only "
                         "with one scale on all axes (apply the scale to the object's parent or reset it)")
    return s


def camera_parameters(scene, camera, obj) -> dict:
    """The camera at the scene's current frame as docs/render.md's camera JSON, placed relative to `obj` (the
    result's space): Blender's location and rotation_quaternion [w, x, y, z], lens, sensor, fit, shift, render
    resolution with its percentage, clip range (in the result's units)."""
    data, render = camera.data, scene.render
    if data.type != "PERSP":
        raise ValueError(f"camera {camera.name} is {data.type.lower()}: the backend renders perspective cameras only")
    if render.pixel_aspect_x != render.pixel_aspect_y:
        raise ValueError(f"pixel aspect {render.pixel_aspect_x:g}:{render.pixel_aspect_y:g}: the backend renders "
                         "square pixels only")
    scale = object_scale(obj)
    location, rotation, _ = (obj.matrix_world.inverted() @ camera.matrix_world).decompose()
    return {"frame": scene.frame_current, "name": camera.name, "location": list(location),
            "rotation_quaternion": list(rotation), "lens": data.lens, "sensor_width": data.sensor_width,
            "sensor_height": data.sensor_height, "sensor_fit": data.sensor_fit, "shift_x": data.shift_x,
            "shift_y": data.shift_y, "resolution_x": render.resolution_x, "resolution_y": render.resolution_y,
            "resolution_percentage": render.resolution_percentage, "clip_start": data.clip_start / scale,
            "clip_end": data.clip_end / scale}


@dataclass
class RenderPlan:
    """A render of a GVF4D object: its result file, the result frames rendered (those the scene's frame range
    shows), the scene frame of the first, one camera per frame, and the object's scale (the EXR depth's unit)."""

    object_name: str
    result: Path
    frames: range
    scene_start: int
    cameras: list[dict]
    depth_scale: float

    def request(self, result: str, blend: str = "display") -> dict:
        """The render job's request (transparent background: the splat goes over Blender's render). result: the
        file's path on the backend's machine."""
        return {"kind": "render", "result": result, "camera": self.cameras,
                "frames": f"{self.frames.start}:{self.frames.stop}", "blend": blend}


def render_plan(scene, obj) -> RenderPlan:
    """The scene's active camera (markers may switch it) at each scene frame where the object shows a frame of
    its result. ValueError when the object is no GVF4D result, the scene has no camera, the ranges do not
    overlap or the object's scale changes over them."""
    if "gvf4d_path" not in obj:
        raise ValueError(f"{obj.name} is not a GVF4D result: import one first")
    start, count = int(obj.get("gvf4d_frame_start", 1)), int(obj["gvf4d_frames"])
    first, last = max(scene.frame_start, start), min(scene.frame_end, start + count - 1)
    if first > last:
        raise ValueError(f"the scene's frames {scene.frame_start}-{scene.frame_end} do not overlap {obj.name}'s "
                         f"frames {start}-{start + count - 1}")
    current, subframe = scene.frame_current, scene.frame_subframe
    cameras, scales = [], []
    try:
        for frame in range(first, last + 1):
            scene.frame_set(frame)
            if scene.camera is None:
                raise ValueError(f"the scene has no active camera at frame {frame}")
            cameras.append(camera_parameters(scene, scene.camera, obj))
            scales.append(object_scale(obj))
    finally:
        scene.frame_set(current, subframe=subframe)
    if max(scales) - min(scales) > UNIFORM_TOLERANCE * max(scales):
        raise ValueError(f"{obj.name}'s scale changes over frames {first}-{last} ({min(scales):g} to "
                         f"{max(scales):g}): the backend's depth would not match; keep its scale constant")
    return RenderPlan(obj.name, paths.to_absolute(obj["gvf4d_path"]), range(first - start, last - start + 1), first,
                      cameras, scales[0])


def renders_dir(object_name: str) -> Path:
    """Where an object's frames are downloaded: //gvf4d_renders/<object>/ beside the saved .blend, else in the
    temporary folder."""
    root = Path(bpy.path.abspath("//")) if bpy.data.filepath else paths.unsaved_results_root()
    return root / RENDERS_FOLDER / bpy.path.clean_name(object_name)


def load_sequence(folder: Path, plan: RenderPlan) -> bpy.types.Image:
    """The plan's EXR frames in folder as one image sequence ("GVF4D <object>", reloaded when it exists)."""
    name = f"GVF4D {plan.object_name}"
    first = folder / frame_file(plan.frames.start)
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.load(str(first))
        image.name = name
    image.filepath = paths.to_stored(first)
    image.source = "SEQUENCE"
    image.alpha_mode = "PREMUL"         # the backend's colour is premultiplied by its alpha
    image.reload()
    return image


def compositor_tree(scene) -> bpy.types.NodeTree:
    """The scene's compositor node group (Blender 5: the scene uses a group whose Group Output is the composite),
    made when it has none."""
    if scene.compositing_node_group is None:
        scene.compositing_node_group = bpy.data.node_groups.new(COMPOSITOR_GROUP, "CompositorNodeTree")
    return scene.compositing_node_group


def _output_node(tree) -> bpy.types.Node:
    """The group's Group Output, with an Image output socket (made when missing)."""
    node = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"), None) or \
        tree.nodes.new("NodeGroupOutput")
    if not node.inputs[0].name:         # the group has no output socket yet: only the node's empty one
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    return node


def _render_layers(tree, scene) -> bpy.types.Node:
    """The tree's Render Layers node (made when it has none), its view layer's Z pass on."""
    node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"), None)
    if node is None:
        node = tree.nodes.new("CompositorNodeRLayers")
        node.scene = scene
    scene.view_layers[node.layer].use_pass_z = True
    return node


def _socket(sockets, name: str) -> bpy.types.NodeSocket:
    """A socket by its name (looking a key up skips the sockets of passes that were off when the node was drawn)."""
    return next(s for s in sockets if s.name == name)


def setup_compositor(scene, image: bpy.types.Image, plan: RenderPlan) -> bpy.types.NodeTree:
    """Puts the object's EXR sequence over what the compositor outputs (Blender's render, or an earlier object's
    composite) by depth: a Z Combine (alpha on) of that image and depth with the sequence's colour and depth
    times the object's scale. The view layer's Z pass is switched on. Run again for the same object, it updates
    its nodes ("GVF4D <object> ...") and keeps their links."""
    tree = compositor_tree(scene)
    prefix = f"GVF4D {plan.object_name}"
    nodes = tree.nodes
    sequence = nodes.get(f"{prefix} Frames")
    if sequence is None:
        sequence = nodes.new("CompositorNodeImage")
        sequence.name = sequence.label = f"{prefix} Frames"
    sequence.image = image
    sequence.frame_duration = len(plan.frames)
    sequence.frame_start = plan.scene_start
    sequence.frame_offset = plan.frames.start - 1       # the file number shown at the start frame is offset + 1
    sequence.use_auto_refresh = True
    depth = nodes.get(f"{prefix} Depth")
    if depth is None:
        depth = nodes.new("ShaderNodeMath")
        depth.name = depth.label = f"{prefix} Depth"
        depth.operation = "MULTIPLY"
    depth.inputs[1].default_value = plan.depth_scale
    combine = nodes.get(f"{prefix} Z Combine")
    if combine is None:
        combine = nodes.new("CompositorNodeZcombine")
        combine.name = combine.label = f"{prefix} Z Combine"
        # alpha on: the splat's soft edges blend over what is behind them. Anti-aliasing off: it blends the two
        # images unblended by alpha along the depth test's edges, a dark ring where the splat fades out.
        _socket(combine.inputs, "Use Alpha").default_value = True
        _socket(combine.inputs, "Anti-Alias").default_value = False
        output = _output_node(tree)
        layers = _render_layers(tree, scene)
        below = output.inputs[0].links[0].from_socket if output.inputs[0].is_linked else \
            _socket(layers.outputs, "Image")
        below_depth = below.node.outputs[1] if below.node.bl_idname == "CompositorNodeZcombine" else \
            _socket(layers.outputs, "Depth")
        links = tree.links
        links.new(below, combine.inputs[0])
        links.new(below_depth, combine.inputs[1])
        links.new(sequence.outputs[0], combine.inputs[2])
        links.new(_socket(sequence.outputs, "Depth"), depth.inputs[0])
        links.new(depth.outputs[0], combine.inputs[3])
        links.new(combine.outputs[0], output.inputs[0])
        x, y = output.location
        sequence.location, depth.location, combine.location = (x - 500, y - 250), (x - 300, y - 300), (x - 150, y)
        output.location = (x + 150, y)
    _render_layers(tree, scene)          # the Z pass on (again: the artist may have switched it off)
    return tree


def _render_jobs(scene) -> dict:
    """The scene's remembered render jobs ({} when none, or unreadable)."""
    try:
        jobs = json.loads(scene.get(RENDER_JOBS, "{}"))
    except (TypeError, ValueError):
        return {}
    return jobs if isinstance(jobs, dict) else {}


def remember(scene, job_id: str, plan: RenderPlan, hide_object: bool) -> None:
    """Records a render job the scene waits for, so that a reopened .blend follows it again."""
    jobs = _render_jobs(scene)
    fields = asdict(plan)
    fields.update(result=paths.to_stored(plan.result), frames=[plan.frames.start, plan.frames.stop])
    jobs[job_id] = {"plan": fields, "hide_object": hide_object}
    scene[RENDER_JOBS] = json.dumps(jobs)


def forget(scene, job_id: str) -> None:
    jobs = _render_jobs(scene)
    jobs.pop(job_id, None)
    scene[RENDER_JOBS] = json.dumps(jobs)


def remembered(scene) -> dict[str, "RenderFollower"]:
    """The scene's render jobs still waited for: job id -> its follower (an entry that cannot be read, as from
    another add-on version, is dropped)."""
    jobs = _render_jobs(scene)
    followers = {}
    for job_id, entry in jobs.items():
        try:
            fields = dict(entry["plan"])
            fields.update(result=paths.to_absolute(fields["result"]), frames=range(*fields["frames"]))
            followers[job_id] = RenderFollower(RenderPlan(**fields), bool(entry["hide_object"]))
        except (KeyError, TypeError, ValueError):
            forget(scene, job_id)
    return followers


@dataclass
class RenderFollower:
    """What a render job does in Blender as the timer follows it (jobs.follow's on_change): its progress in the
    panel; once done, the frames downloaded into //gvf4d_renders/<object>/, loaded as an image sequence and
    composited, the object hidden in Blender's render when asked. A finished job is forgotten by the scene."""

    plan: RenderPlan
    hide_object: bool

    def __call__(self, scene, backend, job: dict, text: str) -> None:
        s, name = scene.gvf4d, self.plan.object_name
        s.status, s.progress = f"render of {name}: {text}", job["progress"]
        if job["state"] in ("failed", "cancelled", "interrupted"):
            s.status = f"render of {name} {job['state']}: {job.get('error') or ''}"
            forget(scene, job["id"])
        if job["state"] != "done":
            return
        folder = renders_dir(name)
        for t in self.plan.frames:
            backend.download(job["id"], frame_file(t), folder / frame_file(t))
        forget(scene, job["id"])
        try:
            image = load_sequence(folder, self.plan)
            setup_compositor(scene, image, self.plan)
        except (ValueError, RuntimeError) as e:
            s.status = f"render of {name}: frames in {folder}, but the compositor could not be set up: {e}"
            return
        obj = scene.objects.get(name)
        if self.hide_object and obj is not None:
            obj.hide_render = True
        s.status = f"{name}: {len(self.plan.frames)} frames rendered by the backend, composited by depth"
