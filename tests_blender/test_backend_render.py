"""Render with the backend, in real Blender: the camera JSON the add-on writes projects as Blender does (the backend
renders a dot where world_to_camera_view puts it, with Blender's depth), the compositor puts the backend's frames
over a Cycles render by depth, and the operator runs end to end against a real backend."""
import json
import subprocess
from pathlib import Path

import bpy  # first: it makes bpy_extras and mathutils importable
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Matrix, Vector

from test_backend_flow import addon, backend, follow  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
BACKEND_PYTHON = ROOT / ".venv" / "bin" / "python"
DOT_POSITIONS = [[0.0, 0.0, 0.0], [0.15, -0.1, 0.05], [0.3, 0.05, -0.1]]     # the dot's centre per result frame
COMPOSITE_SIZE = 96                   # pixels of the Cycles render the compositor test checks

WRITE_RESULTS = """
import json, sys, torch
from gvf4d.representations import AnimatedGaussians, Gaussians, rgb_to_sh_dc
from gvf4d.result import write_result
out, dot_positions = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
def one(scale, rgb):
    return Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), scale),
                     opacities=torch.ones(1), sh_dc=rgb_to_sh_dc(torch.tensor([rgb])))
write_result(f"{out}/dot.gvf4d", AnimatedGaussians(one(0.03, [1.0, 1.0, 1.0]), dot_positions[:, None]), {"fps": 24.0})
write_result(f"{out}/disc.gvf4d", AnimatedGaussians(one(0.3, [0.1, 0.9, 0.1]), torch.zeros(2, 1, 3)), {"fps": 24.0})
"""

READ_EXRS = """
import sys, numpy as np, OpenEXR
arrays = {}
for i, path in enumerate(sys.argv[2:]):
    with OpenEXR.File(path, separate_channels=True) as f:
        for name, c in f.channels().items():
            arrays[f"{i}/{name}"] = np.asarray(c.pixels)
np.savez(sys.argv[1], **arrays)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """dot.gvf4d: one small white Gaussian moving over 3 frames; disc.gvf4d: one large green one, 2 frames."""
    out = tmp_path_factory.mktemp("render_results")
    subprocess.run([str(BACKEND_PYTHON), "-c", WRITE_RESULTS, str(out), json.dumps(DOT_POSITIONS)], check=True,
                   timeout=300)
    return out


def gvf4d_render(result: Path, cameras: list[dict], frames: range, out: Path) -> list[Path]:
    """`gvf4d render` of the result with these cameras (the CLI, in the backend's environment)."""
    out.mkdir(parents=True, exist_ok=True)
    camera_file = out / "camera.json"
    camera_file.write_text(json.dumps(cameras))
    subprocess.run([str(ROOT / ".venv" / "bin" / "gvf4d"), "render", str(result), "--camera", str(camera_file),
                    "--frames", f"{frames.start}:{frames.stop}", "--device", "cpu", "--out", str(out)],
                   check=True, timeout=300, capture_output=True)
    return [out / f"frame_{t:04d}.exr" for t in frames]


def read_exrs(paths: list[Path], tmp: Path) -> list[dict[str, np.ndarray]]:
    """The channels of each EXR (read in the backend's environment, which has OpenEXR)."""
    npz = tmp / "exrs.npz"
    subprocess.run([str(BACKEND_PYTHON), "-c", READ_EXRS, str(npz), *map(str, paths)], check=True, timeout=120)
    data = np.load(npz)
    return [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")} for i in range(len(paths))]


def camera_object(name: str, lens: float = 50.0):
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.data.lens = lens
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    return cam


def emission_cube(name: str, location, size: float, rgb) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    h = size / 2
    corners = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(corners, [], faces)
    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    nt.nodes.clear()
    emission, out = nt.nodes.new("ShaderNodeEmission"), nt.nodes.new("ShaderNodeOutputMaterial")
    emission.inputs["Color"].default_value = (*rgb, 1.0)
    nt.links.new(emission.outputs[0], out.inputs["Surface"])
    mesh.materials.append(mat)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return obj


def interior(mask: np.ndarray) -> np.ndarray:
    """The pixels of mask whose 8 neighbours are in it too: away from the anti-aliased edges."""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    return np.all([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def test_camera_json_projects_as_blender(empty_scene, results, tmp_path):
    """An animated camera (track-to constraint, vertical sensor fit, shifts, 50% resolution) on an object moved,
    turned and scaled: the backend's dot lands where Blender projects its centre, at Blender's depth."""
    from gvf_blender import backend_render, importer
    scene = empty_scene
    scene.frame_start, scene.frame_end = 4, 8
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 96, 64, 50
    obj = importer.import_splats(str(results / "dot.gvf4d"), frame_start=5, display="points")
    obj.matrix_world = Matrix.LocRotScale(Vector((0.3, -0.2, 0.5)), Euler((0.2, -0.4, 1.1)), Vector((1.7,) * 3))
    cam = camera_object("cam", lens=35.0)
    cam.data.sensor_fit, cam.data.sensor_height = "VERTICAL", 20.0
    cam.data.shift_x, cam.data.shift_y = 0.07, -0.04
    target = bpy.data.objects.new("target", None)
    target.location = obj.matrix_world.translation
    scene.collection.objects.link(target)
    cam.constraints.new("TRACK_TO").target = target
    for frame, location in ((5, (0.5, -3.0, 1.0)), (7, (-1.5, -2.5, 0.2))):
        cam.location = location
        cam.keyframe_insert("location", frame=frame)

    plan = backend_render.render_plan(scene, obj)
    assert (plan.frames, plan.scene_start, len(plan.cameras)) == (range(0, 3), 5, 3)
    assert plan.depth_scale == pytest.approx(1.7)
    assert scene.frame_current == 1                                   # the plan leaves the current frame as it was
    exrs = read_exrs(gvf4d_render(plan.result, plan.cameras, plan.frames, tmp_path / "dot"), tmp_path)
    width, height = 48, 32
    for t, px in enumerate(exrs):
        assert px["A"].shape == (height, width)
        scene.frame_set(plan.scene_start + t)
        u, v, z = world_to_camera_view(scene, cam, obj.matrix_world @ Vector(DOT_POSITIONS[t]))
        a = px["A"].astype(np.float64)
        assert a.sum() > 1.0, f"frame {t}: the dot is not in the image"
        rows, cols = np.mgrid[0:height, 0:width] + 0.5
        centroid = np.array([(a * cols).sum(), (a * rows).sum()]) / a.sum()
        np.testing.assert_allclose(centroid, [u * width, (1 - v) * height], atol=0.1, err_msg=f"frame {t}")
        peak = np.unravel_index(np.argmax(a), a.shape)
        assert px["Depth.Z"][peak] * plan.depth_scale == pytest.approx(z, rel=1e-3), f"frame {t}"


def test_compositor_puts_the_backend_frames_over_cycles_by_depth(empty_scene, results, tmp_path):
    """A red cube in front of the splat covers it, a blue cube behind it is covered by it, in Cycles' composite
    (96 px, 2 samples), the object scaled by 0.5 (without the depth's scale the blue cube would win)."""
    from gvf_blender import backend_render, importer
    scene = empty_scene
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene.frame_start = scene.frame_end = 4
    scene.frame_set(4)
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.device = 2, "CPU"
    scene.render.resolution_x = scene.render.resolution_y = COMPOSITE_SIZE
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    obj = importer.import_splats(str(results / "disc.gvf4d"), frame_start=3, display="points", placement="ORIGIN")
    obj.hide_render = True                   # Blender's own splat stays out: the composite shows the backend's
    obj.scale = (0.5, 0.5, 0.5)              # the EXR's depth is then in the result's units, twice the scene's
    cam = camera_object("cam")
    cam.location, cam.rotation_euler = (0.0, -4.0, 0.0), (np.pi / 2, 0.0, 0.0)
    emission_cube("front", (-0.12, -1.0, 0.0), 0.2, (1.0, 0.0, 0.0))
    emission_cube("behind", (0.3, 1.5, -0.5), 1.2, (0.0, 0.0, 1.0))

    plan = backend_render.render_plan(scene, obj)
    assert (plan.frames, plan.scene_start, plan.depth_scale) == (range(1, 2), 4, 0.5)   # scene frame 4: result's 1
    folder = backend_render.renders_dir(obj.name)
    assert folder == tmp_path / "gvf4d_renders" / obj.name
    exr = gvf4d_render(plan.result, plan.cameras, plan.frames, folder)
    image = backend_render.load_sequence(folder, plan)
    assert image.source == "SEQUENCE" and image.filepath == f"//gvf4d_renders/{obj.name}/frame_0001.exr"
    tree = backend_render.setup_compositor(scene, image, plan)
    assert scene.view_layers[0].use_pass_z and {f"GVF4D {obj.name} {n}" for n in ("Frames", "Depth", "Z Combine")} \
        <= set(tree.nodes.keys())
    backend_render.setup_compositor(scene, image, plan)              # again: the same nodes, updated
    assert len(tree.nodes) == 5 and len(tree.links) == 6

    def render(name: str, compositing: bool) -> np.ndarray:
        scene.render.use_compositing = compositing
        scene.render.filepath = str(tmp_path / name)
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(tmp_path / name))
        pixels = np.array(img.pixels[:]).reshape(COMPOSITE_SIZE, COMPOSITE_SIZE, 4)
        return pixels[::-1, :, :3]          # rows top-down, as the EXR's

    plain, composite = render("plain.png", False), render("composite.png", True)
    alpha = read_exrs(exr, tmp_path)[0]["A"]
    red, blue = interior(plain[..., 0] > 0.9), interior(plain[..., 2] > 0.9)
    covered_splat = red & (alpha > 0.5)                    # the front cube over the splat: the cube wins
    splat_over_blue = blue & (alpha > 0.7)                 # the splat in front of the blue cube: the splat wins
    blue_alone = blue & (alpha < 0.01)
    assert covered_splat.sum() > 5 and splat_over_blue.sum() > 5 and blue_alone.sum() > 5
    assert (composite[covered_splat].argmax(-1) == 0).all()
    assert (composite[splat_over_blue].argmax(-1) == 1).all()
    np.testing.assert_allclose(composite[blue_alone], plain[blue_alone], atol=0.02)
    splat_only = (alpha > 0.5) & (plain.max(-1) < 0.02)       # over the empty world: the splat's green
    assert splat_only.sum() > 5 and (composite[splat_only].argmax(-1) == 1).all()


def test_operator_renders_through_a_backend_and_composites(backend, addon, results, tmp_path,  # noqa: F811
                                                           monkeypatch):
    """The operator on the active result: the job is followed by the add-on's timer, the frames the scene shows
    (2 of 3) are downloaded beside the .blend and composited; for a backend elsewhere the result is uploaded."""
    from gvf_blender import connection, importer
    scene = bpy.context.scene
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    obj = importer.import_splats(str(results / "dot.gvf4d"), frame_start=2, display="points")
    bpy.context.view_layer.objects.active = obj
    cam = camera_object("cam")
    cam.location, cam.rotation_euler = (0.0, -3.0, 0.0), (np.pi / 2, 0.0, 0.0)
    assert bpy.ops.gvf4d.render_with_backend() == {"FINISHED"}
    follow()
    assert "2 frames rendered by the backend" in scene.gvf4d.status, scene.gvf4d.status
    folder = tmp_path / "gvf4d_renders" / obj.name
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.exr", "frame_0001.exr"]
    image = bpy.data.images[f"GVF4D {obj.name}"]
    assert image.source == "SEQUENCE"
    frames = scene.compositing_node_group.nodes[f"GVF4D {obj.name} Frames"]
    assert (frames.frame_start, frames.frame_duration, frames.frame_offset) == (2, 2, -1)
    assert obj.hide_render
    # a backend on another machine reads no path of this one: the result is uploaded first
    nodes = len(scene.compositing_node_group.nodes)
    monkeypatch.setattr(connection, "is_remote", lambda backend: True)
    assert bpy.ops.gvf4d.render_with_backend() == {"FINISHED"}
    follow()
    assert "2 frames rendered by the backend" in scene.gvf4d.status, scene.gvf4d.status
    assert [p.name for p in (backend[1] / "uploads").rglob("*.gvf4d")] == ["dot.gvf4d"]
    assert len(scene.compositing_node_group.nodes) == nodes


def test_a_render_job_is_followed_again_after_the_blend_is_reopened(backend, addon, results,  # noqa: F811
                                                                    tmp_path):
    """Saved and reopened while its render job is in flight, the .blend still gets its frames composited; a
    finished job is forgotten."""
    from gvf_blender import backend_render, importer, jobs
    scene = bpy.context.scene
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    obj = importer.import_splats(str(results / "dot.gvf4d"), frame_start=2, display="points")
    bpy.context.view_layer.objects.active = obj
    name = obj.name
    cam = camera_object("cam")
    cam.location, cam.rotation_euler = (0.0, -3.0, 0.0), (np.pi / 2, 0.0, 0.0)
    assert bpy.ops.gvf4d.render_with_backend() == {"FINISHED"}
    assert list(backend_render.remembered(scene)) and jobs.busy()
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.read_factory_settings(use_empty=True)       # closing the .blend stops following its jobs
    assert not jobs.busy()
    bpy.ops.wm.open_mainfile(filepath=str(blend))            # the load handler follows them again
    assert jobs.busy()
    follow()
    scene = bpy.context.scene
    assert "2 frames rendered by the backend" in scene.gvf4d.status, scene.gvf4d.status
    assert sorted(p.name for p in (tmp_path / "gvf4d_renders" / name).iterdir()) == \
        ["frame_0000.exr", "frame_0001.exr"]
    assert f"GVF4D {name} Z Combine" in scene.compositing_node_group.nodes
    assert backend_render.remembered(scene) == {}
