"""In real Blender (bpy 5.0.1): the imported splat is the one the backend made.

fidelity.gvf4d (tools/make_blender_fixture.py) moves every track; its reference renders come from the backend's
reference rasterizer through the plate camera, blending in linear light over white (what Blender composites).
Cycles renders of the import through the footage camera must match them, frame by frame and between frames.
Set GVF4D_WRITE_FIDELITY_IMAGE=1 to also write the side-by-side picture to docs/images/splat_fidelity.png, and
GVF4D_TEST_EEVEE=1 to render with EEVEE too (it runs on software OpenGL without a GPU: minutes per frame).
"""
import os
from pathlib import Path

import numpy as np
import pytest

import bpy

ROOT = Path(__file__).resolve().parents[1]
SH_C0 = 0.28209479177387814
START = 7            # the scene frame the result's frame 0 lands on


def srgb_to_linear(c):
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def sh_basis(d):
    """3DGS's real SH basis, bands 1-3, of unit directions (N, 3) -> (N, 15)."""
    x, y, z = d.T
    xx, yy, zz = x * x, y * y, z * z
    c1 = 0.4886025119029199
    c2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
    c3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
          1.445305721320277, -0.5900435899266435)
    return np.stack([-c1 * y, c1 * z, -c1 * x, c2[0] * x * y, c2[1] * y * z, c2[2] * (2 * zz - xx - yy), c2[3] * x * z,
                     c2[4] * (xx - yy), c3[0] * y * (3 * xx - yy), c3[1] * x * y * z, c3[2] * y * (4 * zz - xx - yy),
                     c3[3] * z * (2 * zz - 3 * xx - 3 * yy), c3[4] * x * (4 * zz - xx - yy), c3[5] * z * (xx - yy),
                     c3[6] * x * (xx - 3 * yy)], 1)


def psnr(a, b):
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


def iou(a, b):
    return float(((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum())


def quat_to_rotmat(q):
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


@pytest.fixture()
def fidelity(empty_scene, fixture_dir):
    """The result imported with its defaults and the footage camera made active; the fixture's arrays."""
    from gvf_blender import footage_camera, importer
    from gvf_blender.result_file import GVF4DFile
    path = fixture_dir / "fidelity.gvf4d"
    meta = GVF4DFile(path).metadata
    obj = importer.import_splats(path, frame_start=START)
    camera = footage_camera.create_footage_camera(meta, frame_start=START)
    empty_scene.camera = camera
    return obj, camera, meta, np.load(fixture_dir / "fidelity.npz")


def evaluated_points(obj, frame, subframe=0.0):
    """The animation modifier's output (display modifier off): position and the current attributes."""
    mod = obj.modifiers["GVF4D Splats"]
    mod.show_viewport = False
    bpy.context.scene.frame_set(frame, subframe=subframe)
    me = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    out = {}
    for name, field, width in (("position", "vector", 3), ("rotation", "value", 4), ("scale", "vector", 3),
                               ("opacity", "value", 1), ("color", "color", 4)):
        values = np.empty(len(me.vertices) * width, np.float32)
        me.attributes[name].data.foreach_get(field, values)
        out[name] = values.reshape(len(me.vertices), width) if width > 1 else values
    mod.show_viewport = True
    return out


def test_every_track_animates_between_frames(fidelity):
    obj, _, _, ref = fidelity
    T = ref["positions"].shape[0]
    rgb = 0.5 + SH_C0 * ref["sh_dc"]
    for t in range(T):
        p = evaluated_points(obj, START + t)
        np.testing.assert_allclose(p["position"], ref["positions"][t], atol=1e-6)
        np.testing.assert_allclose(p["scale"], ref["scales"][t], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(p["opacity"], ref["opacities"][t], atol=1e-6)
        np.testing.assert_allclose(p["color"][:, :3], rgb[t], atol=1e-6)
        q = ref["quats"][t] / np.linalg.norm(ref["quats"][t], axis=1, keepdims=True)
        np.testing.assert_allclose(np.abs((p["rotation"] * q).sum(1)), 1.0, atol=1e-6)
    # a quarter of the way from frame 1 to frame 2: every track blended, rotations along the shortest arc
    p = evaluated_points(obj, START + 1, subframe=0.25)
    mix = lambda a: 0.75 * a[1] + 0.25 * a[2]
    np.testing.assert_allclose(p["position"], mix(ref["positions"]), atol=1e-5)
    np.testing.assert_allclose(p["scale"], mix(ref["scales"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p["opacity"], mix(ref["opacities"]), atol=1e-5)
    np.testing.assert_allclose(p["color"][:, :3], mix(rgb), atol=1e-5)
    r0, r1, r = quat_to_rotmat(ref["quats"][1]), quat_to_rotmat(ref["quats"][2]), quat_to_rotmat(p["rotation"])
    angle = lambda a, b: np.arccos(np.clip((np.trace(a.transpose(0, 2, 1) @ b, axis1=1, axis2=2) - 1) / 2, -1, 1))
    np.testing.assert_allclose(angle(r0, r), 0.25 * angle(r0, r1), atol=2e-3)
    np.testing.assert_allclose(angle(r, r1), 0.75 * angle(r0, r1), atol=2e-3)
    # outside the result's range the ends hold
    np.testing.assert_allclose(evaluated_points(obj, START - 3)["position"], ref["positions"][0], atol=1e-6)
    np.testing.assert_allclose(evaluated_points(obj, START + T + 3)["position"], ref["positions"][-1], atol=1e-6)


def test_quads_span_the_projected_covariance_and_colour_follows_the_view(fidelity):
    """Each instance maps the quad [-1, 1]² to ±3σ of its Gaussian's covariance projected on the plane
    perpendicular to the view ray; its colour is the SH colour seen from the camera."""
    obj, camera, _, ref = fidelity
    bpy.context.scene.frame_set(START + 3)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    geometry = evaluated.instances_pointcloud()         # the instances' transforms and attributes
    n = len(geometry.points)
    transforms = np.empty(n * 16, np.float32)
    geometry.attributes["instance_transform"].data.foreach_get("value", transforms)
    transforms = transforms.reshape(n, 4, 4).transpose(0, 2, 1)              # column-major storage
    colour = np.empty(n * 4, np.float32)
    geometry.attributes["color"].data.foreach_get("color", colour)
    # the camera in the object's space, where the file's values live
    eye = (np.array(obj.matrix_world.inverted()) @ np.append(np.array(camera.matrix_world.translation), 1.0))[:3]
    mu = ref["positions"][3]
    np.testing.assert_allclose(transforms[:, :3, 3], mu, atol=1e-5)
    d = (mu - eye) / np.linalg.norm(mu - eye, axis=1, keepdims=True)
    np.testing.assert_allclose(transforms[:, :3, 2], -d, atol=1e-5)
    rs = quat_to_rotmat(ref["quats"][3]) * ref["scales"][3][:, None, :]
    flat = np.eye(3) - d[:, :, None] * d[:, None, :]
    projected = flat @ rs @ rs.transpose(0, 2, 1) @ flat
    spans = transforms[:, :3, :2] @ transforms[:, :3, :2].transpose(0, 2, 1)
    np.testing.assert_allclose(spans, 9 * projected, atol=1e-6, rtol=1e-4)
    dc = 0.5 + SH_C0 * ref["sh_dc"][3]
    colour = colour.reshape(n, 4)[:, :3]
    np.testing.assert_allclose(colour, dc + np.einsum("nk,nkc->nc", sh_basis(d), ref["sh_rest"]), atol=1e-5)
    assert np.abs(colour - dc).mean() > 0.02       # the bands matter in this file


def render(scene, path: Path, samples: int = 4, engine: str = "CYCLES"):
    """A render through the scene camera, transparent film, composited over white in linear light:
    -> display rgb (H, W, 3), alpha (H, W)."""
    scene.render.engine = engine
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.eevee.taa_render_samples = samples
    scene.render.film_transparent = True
    scene.render.dither_intensity = 0.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "16"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    image.colorspace_settings.name = "Non-Color"
    px = np.array(image.pixels[:], np.float32).reshape(image.size[1], image.size[0], 4)[::-1]
    bpy.data.images.remove(image)
    alpha = px[..., 3:]
    return linear_to_srgb(srgb_to_linear(px[..., :3]) * alpha + (1 - alpha)), alpha[..., 0]


def save_png(rgb, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = bpy.data.images.new("side by side", rgb.shape[1], rgb.shape[0])
    image.colorspace_settings.name = "Non-Color"
    image.pixels.foreach_set(np.concatenate([rgb, np.ones_like(rgb[..., :1])], -1)[::-1].astype(np.float32).ravel())
    image.filepath_raw, image.file_format = str(path), "PNG"
    image.save()
    bpy.data.images.remove(image)


@pytest.mark.parametrize("engine", ["CYCLES", pytest.param("BLENDER_EEVEE", marks=pytest.mark.skipif(
    not os.environ.get("GVF4D_TEST_EEVEE"), reason="EEVEE runs on software OpenGL here: minutes per frame; "
                                                    "set GVF4D_TEST_EEVEE=1"))])
def test_render_matches_the_backend_reference(fidelity, tmp_path, engine):
    from gvf_blender import footage_camera, scene_setup
    obj, _, meta, ref = fidelity
    scene = bpy.context.scene
    footage_camera.match_scene(scene, meta, START)
    assert (scene.render.resolution_x, scene.render.resolution_y) == tuple(meta["footage"]["source_size"])
    assert scene_setup.unmet_requirements(scene), "the factory scene should not meet the look's needs"
    scene_setup.apply_look_settings(scene)
    assert not scene_setup.unmet_requirements(scene)
    rows, scores = [], {}
    for i, time in enumerate(ref["times"]):
        frame = int(np.floor(time))
        scene.frame_set(START + frame, subframe=float(time - frame))
        rgb, alpha = render(scene, tmp_path / f"render_{i}.png", engine=engine)
        scores[float(time)] = (psnr(rgb, ref["images"][i]), iou(alpha, ref["alphas"][i]))
        gap = np.full((rgb.shape[0], 4, 3), 0.8, np.float32)
        rows.append(np.concatenate([ref["images"][i], rgb, gap], 1))    # backend | Blender
        if time != frame:   # between frames: closer to the blended reference than to either neighbour
            assert scores[float(time)][0] > psnr(rgb, ref["images"][frame]) + 6
            assert scores[float(time)][0] > psnr(rgb, ref["images"][frame + 1]) + 6
    picture = np.concatenate(rows, 0)
    save_png(picture, tmp_path / "splat_fidelity.png")
    if os.environ.get("GVF4D_WRITE_FIDELITY_IMAGE") and engine == "CYCLES":
        save_png(np.concatenate([np.concatenate(rows[:3], 1), np.concatenate(rows[3:], 1)], 0),
                 ROOT / "docs" / "images" / "splat_fidelity.png")
    print(engine, {t: f"{p:.1f} dB, IoU {q:.3f}" for t, (p, q) in scores.items()})
    assert all(p >= 30.0 for p, _ in scores.values()), scores
    assert all(q >= 0.95 for _, q in scores.values()), scores


def test_points_display_renders_the_splat_colour(fidelity, tmp_path):
    from gvf_blender import footage_camera, importer, scene_setup
    obj, _, meta, ref = fidelity
    importer.set_display(obj, "points")
    scene = bpy.context.scene
    footage_camera.match_scene(scene, meta, START)
    scene_setup.apply_look_settings(scene)
    scene.frame_set(START)
    rgb, alpha = render(scene, tmp_path / "points.png", samples=2)
    assert iou(alpha, ref["alphas"][0]) > 0.6
    # a solid pixel shows one point's colour: the nearest of the Gaussians' colours is close (a display colour
    # emitted as linear, or converted twice, lands 0.18-0.23 away)
    solid = rgb[alpha > 0.99]
    assert len(solid) > 1000
    colours = np.clip(0.5 + SH_C0 * ref["sh_dc"][0], 0.0, 1.0)
    nearest = np.linalg.norm(solid[:, None, :] - colours[None], axis=-1).min(1)
    assert np.median(nearest) < 0.06


def test_placement_undoes_the_normalisation_and_the_camera_sees_the_plate(fidelity):
    obj, camera, meta, ref = fidelity
    from gvf_blender import footage_camera, importer, placement
    assert obj["gvf4d_placement"] == "ASSET"     # the canonical came from the artist's splat
    world = np.array(obj.matrix_world)
    canonical = ref["positions"][0]            # this file's canonical pose is its frame 0
    np.testing.assert_allclose(canonical @ world[:3, :3].T + world[:3, 3], ref["asset_positions"], atol=1e-5)
    # the footage camera projects the object as the backend's plate camera projects the aligned splat
    scene = bpy.context.scene
    footage_camera.match_scene(scene, meta, START)
    width, height = meta["footage"]["source_size"]
    projection = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=width, y=height))
    view = np.array(camera.matrix_world.inverted())
    world_points = np.c_[canonical, np.ones(len(canonical))] @ world.T
    clip = world_points @ view.T @ projection.T
    ndc = clip[:, :2] / clip[:, 3:]
    pixels = np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], 1)
    s, offset = meta["canonical"]["alignment"]["scale"], np.array(meta["canonical"]["alignment"]["offset"])
    seen = (canonical * s + offset) @ ref["viewmat"][:3, :3].T + ref["viewmat"][:3, 3]
    expected = seen[:, :2] / seen[:, 2:] * ref["K"][[0, 1], [0, 1]] + ref["K"][:2, 2]
    np.testing.assert_allclose(pixels, expected, atol=1e-3)
    # ORIGIN: the result's own space with the unapplied alignment applied, and the camera where the backend had it
    other = importer.import_splats(obj["gvf4d_path"], placement="ORIGIN")
    np.testing.assert_allclose(np.array(other.matrix_world), placement.similarity(s, offset), atol=1e-6)
    cam2 = footage_camera.create_footage_camera(meta, placement="ORIGIN")
    np.testing.assert_allclose(np.array(cam2.matrix_world.translation),
                               -ref["viewmat"][:3, :3].T @ ref["viewmat"][:3, 3], atol=1e-5)
    # the footage camera written as matrices (the backend's Cameras.to_json) gives the same camera
    view, K, canvas = footage_camera.canvas_camera(meta)
    as_matrices = dict(meta, camera={"viewmats": [view.tolist()], "Ks": [K.tolist()], "width": canvas,
                                     "height": canvas})
    cam3 = footage_camera.create_footage_camera(as_matrices, background=False)
    np.testing.assert_allclose(np.array(cam3.matrix_world), np.array(camera.matrix_world), atol=1e-6)
    assert (cam3.data.lens, cam3.data.shift_x, cam3.data.shift_y) == pytest.approx(
        (camera.data.lens, camera.data.shift_x, camera.data.shift_y))
    # the plate: the footage's frame for each scene frame
    plate = camera.data.background_images[0]
    assert plate.image.source == "SEQUENCE" and Path(plate.image.filepath).name == "frame_0000.png"
    for t in (0, 3):
        scene.frame_set(START + t)
        assert plate.image_user.frame_current == t     # the number in frame_000t.png
    assert footage_camera.frame_range(meta, START) == (START, START + 4)
    ntsc = {"fps": 30000 / 1001, "fps_rational": [30000, 1001]}
    assert footage_camera.scene_fps(ntsc) == (30, pytest.approx(1.001, abs=1e-12))
    assert footage_camera.scene_fps({"fps": 12.5}) == (12, pytest.approx(12 / 12.5))


def test_import_leaves_scene_settings_and_a_new_take_hides_the_previous(empty_scene, fixture_dir):
    from gvf_blender import importer, scene_setup
    before = scene_setup.look_requirements(empty_scene)
    take0 = importer.import_splats(fixture_dir / "fidelity.gvf4d", name="take0")
    assert scene_setup.look_requirements(empty_scene) == before
    take1 = importer.import_splats(fixture_dir / "fidelity.gvf4d", name="take1")
    importer.hide_take(take0)
    assert take0.hide_render and take0.hide_viewport and not take1.hide_render
    empty_scene.frame_set(1)
    parents = [i.parent.original.name for i in bpy.context.evaluated_depsgraph_get().object_instances
               if i.is_instance and i.parent]
    assert parents.count("take1") == len(take1.data.vertices) and "take0" not in parents
