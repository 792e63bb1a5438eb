"""`gvf4d render`: a .gvf4d result rendered from the footage camera or a Blender camera into multilayer EXRs."""
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch
from PIL import Image

from gvf4d.cli import main
from gvf4d.pipelines.render import EMPTY_DEPTH
from gvf4d.rendering import FOOTAGE_FOV_X_DEG
from gvf4d.rendering.blender_camera import BlenderCamera
from gvf4d.rendering.color_space import srgb_to_linear
from gvf4d.representations import AnimatedGaussians, Gaussians, rgb_to_sh_dc
from gvf4d.result import write_result
from gvf4d.synthetic import make_synthetic_shot

ROOT = Path(__file__).resolve().parents[1]
W, H = 48, 40
CHANNELS = {"R", "G", "B", "A", "Depth.Z"}
FOOTAGE_CAMERA = {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": 2.0, "azimuth_deg": 0.0,
                  "elevation_deg": 0.0, "width": W, "height": H}
# the footage camera as Blender sees it: at (0, -2, 0) looking along +Y (X rotated by 90 degrees), FoV-x 49.1 degrees
BLENDER_FOOTAGE_CAMERA = {"location": [0.0, -2.0, 0.0], "rotation_euler": [math.pi / 2, 0.0, 0.0],
                          "lens": 18.0 / math.tan(math.radians(FOOTAGE_FOV_X_DEG / 2)), "sensor_width": 36.0,
                          "sensor_height": 24.0, "sensor_fit": "AUTO", "shift_x": 0.0, "shift_y": 0.0,
                          "resolution_x": W, "resolution_y": H, "clip_start": 0.01, "clip_end": 100.0}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A 3-frame result whose every track moves (positions, rotations, scales, fading opacity, changing colour)
    and whose canonical has degree-1 SH bands."""
    shot = make_synthetic_shot(num_frames=3, gaussians_per_part=30, seed=2)
    a = shot.animated
    gen = torch.Generator().manual_seed(0)
    fade = torch.linspace(1.0, 0.6, 3)[:, None]
    canonical = replace(a.canonical, sh_rest=0.1 * torch.randn(len(a.canonical), 3, 3, generator=gen))
    animated = AnimatedGaussians(canonical=canonical, positions=a.positions, scales=a.scales, quats=a.quats,
                                 opacities=a.canonical.opacities[None] * fade,
                                 sh_dc=a.canonical.sh_dc[None] + 0.5 * (1 - fade)[..., None])
    path = tmp_path_factory.mktemp("render") / "take.gvf4d"
    write_result(path, animated, {"fps": 24.0, "camera": FOOTAGE_CAMERA})
    return path, animated


def _exr(path: Path) -> dict[str, np.ndarray]:
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {name: np.asarray(c.pixels) for name, c in f.channels().items()}


def _render(*args) -> int:
    return main(["render", *map(str, args)])


def test_render_writes_multilayer_exr_and_png(result, tmp_path):
    path, animated = result
    out = tmp_path / "frames"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "render", str(path), "--frames", "1:3", "--png",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = ["frame_0001.exr", "frame_0001.png", "frame_0002.exr", "frame_0002.png"]
    assert sorted(p.name for p in out.iterdir()) == names                # no temp files left behind
    assert r.stdout.split() == [str(out / n) for n in names]
    for t in (1, 2):
        px = _exr(out / f"frame_{t:04d}.exr")
        assert set(px) == CHANNELS
        assert all(v.shape == (H, W) and v.dtype == np.float32 for v in px.values())
        alpha, depth = px["A"], px["Depth.Z"]
        assert alpha.min() >= 0 and 0.9 < alpha.max() <= 1 and (alpha == 0).any()
        z = animated.positions[t, :, 1].numpy() + 2.0                      # camera z of every centre (camera at y=-2)
        solid = alpha > 0.5
        assert solid.sum() > 50
        assert (depth[solid] >= z.min()).all() and (depth[solid] <= z.max()).all()
        assert (depth[alpha == 0] == EMPTY_DEPTH).all()
        rgb = np.stack([px["R"], px["G"], px["B"]], -1)
        assert (rgb[alpha == 0] == 0).all() and (rgb >= 0).all()          # premultiplied: nothing where alpha is 0
        png = np.asarray(Image.open(out / f"frame_{t:04d}.png"))
        assert png.shape == (H, W, 4)
        np.testing.assert_allclose(png[..., 3] / 255, alpha, atol=1 / 255)


def test_blender_camera_equal_to_the_footage_camera_gives_the_same_image(result, tmp_path):
    path, _ = result
    as_quaternion = {**BLENDER_FOOTAGE_CAMERA, "rotation_quaternion": [math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0]}
    del as_quaternion["rotation_euler"]
    cameras = {"euler": BLENDER_FOOTAGE_CAMERA, "quaternion": as_quaternion,
               "animated": [BLENDER_FOOTAGE_CAMERA, as_quaternion]}
    assert _render(path, "--frames", "0:2", "--out", tmp_path / "footage") == 0
    for name, cam in cameras.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(cam))
        assert _render(path, "--frames", "0:2", "--camera", tmp_path / f"{name}.json", "--out", tmp_path / name) == 0
        for t in (0, 1):
            want, got = _exr(tmp_path / "footage" / f"frame_{t:04d}.exr"), _exr(tmp_path / name / f"frame_{t:04d}.exr")
            for ch in CHANNELS:
                scale = 1.0 if ch != "Depth.Z" else 10.0                     # depth in metres, ~2 here
                np.testing.assert_allclose(got[ch], want[ch], rtol=0, atol=1e-4 * scale, err_msg=f"{name} {ch}")


def test_display_and_linear_blending_by_hand(tmp_path):
    """Two Gaussians on the optical axis: red in front (opacity 0.5), green behind (0.6), on the centre pixel."""
    g = Gaussians(means=torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.0, 0.0]]), scales=torch.full((2, 3), 0.05),
                  quats=torch.tensor([[1.0, 0, 0, 0]] * 2), opacities=torch.tensor([0.5, 0.6]),
                  sh_dc=rgb_to_sh_dc(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    path = write_result(tmp_path / "two.gvf4d", AnimatedGaussians.static(g, 1), {"fps": 24.0})
    w = torch.tensor([0.5, 0.5 * 0.6])                                     # blending weights, front then back
    alpha = float(w.sum())
    display = w @ torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])               # premultiplied display composite
    expect = {"display": alpha * srgb_to_linear(display / alpha),         # unpremultiplied, to linear, premultiplied
              "linear": w @ srgb_to_linear(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))}
    white = {"display": srgb_to_linear(display + (1 - alpha)), "linear": expect["linear"] + (1 - alpha)}
    for blend in ("display", "linear"):
        assert _render(path, "--size", "33x33", "--blend", blend, "--out", tmp_path / blend) == 0
        px = _exr(tmp_path / blend / "frame_0000.exr")
        centre = torch.tensor([px[c][16, 16] for c in "RGB"])
        torch.testing.assert_close(centre, expect[blend], rtol=0, atol=1e-5)
        assert px["A"][16, 16] == pytest.approx(alpha, abs=1e-6)
        assert px["Depth.Z"][16, 16] == pytest.approx((0.5 * 1.5 + 0.3 * 2.0) / 0.8, abs=1e-5)
        assert _render(path, "--size", "33x33", "--blend", blend, "--background", "1,1,1", "--out",
                       tmp_path / f"{blend}_white") == 0
        px = _exr(tmp_path / f"{blend}_white" / "frame_0000.exr")
        torch.testing.assert_close(torch.tensor([px[c][16, 16] for c in "RGB"]), white[blend], rtol=0, atol=1e-5)
        assert (px["A"] == 1).all() and px["R"][0, 0] == pytest.approx(1.0)
    assert not torch.allclose(expect["display"], expect["linear"], atol=1e-2)   # the two blends differ here


BLENDER_PROJECTION = """
import json, math, sys
import bpy
from mathutils import Euler, Vector
from bpy_extras.object_utils import world_to_camera_view
scene, cam = bpy.context.scene, bpy.context.scene.camera
out = []
for i, (res, fit, shift, pct) in enumerate([((64, 48), "AUTO", (0.1, -0.2), 100), ((48, 64), "AUTO", (0.1, -0.05), 100),
        ((48, 64), "HORIZONTAL", (0.2, 0.1), 100), ((64, 48), "VERTICAL", (-0.1, 0.3), 100),
        ((80, 30), "VERTICAL", (0.0, 0.05), 50)]):
    euler = Euler((math.radians(80 + 5 * i), 0.1 * i - 0.2, 0.3 - 0.15 * i), "XYZ")
    cam.location = (0.4 * i - 1, -5 + 0.3 * i, 0.2 * i - 0.3)
    if i % 2:
        cam.rotation_mode, cam.rotation_quaternion = "QUATERNION", euler.to_quaternion()
        rotation = {"rotation_quaternion": list(cam.rotation_quaternion)}
    else:
        cam.rotation_mode, cam.rotation_euler = "XYZ", euler
        rotation = {"rotation_euler": list(cam.rotation_euler)}
    d = cam.data
    d.lens, d.sensor_width, d.sensor_height, d.sensor_fit = 30 + 8 * i, 36 - 3 * i, 24 - 2 * i, fit
    d.shift_x, d.shift_y = shift
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = *res, pct
    bpy.context.view_layer.update()
    w, h = r.resolution_x * pct // 100, r.resolution_y * pct // 100
    points = [(0.3 * math.sin(k), 0.3 * math.cos(2 * k), 0.3 * math.sin(3 * k)) for k in range(12)]
    pixels = [[v.x * w, (1 - v.y) * h, v.z] for v in (world_to_camera_view(scene, cam, Vector(p)) for p in points)]
    out.append({"camera": {"location": list(cam.location), **rotation, "lens": d.lens, "sensor_width": d.sensor_width,
                           "sensor_height": d.sensor_height, "sensor_fit": fit, "shift_x": d.shift_x,
                           "shift_y": d.shift_y, "resolution_x": r.resolution_x, "resolution_y": r.resolution_y,
                           "resolution_percentage": pct, "clip_start": d.clip_start, "clip_end": d.clip_end},
                "matrix_world": [list(row) for row in cam.matrix_world], "points": points, "pixels": pixels})
print("PROJECTIONS" + json.dumps(out))
"""


@pytest.mark.skipif(not (ROOT / ".venv-blender" / "bin" / "python").exists(),
                    reason="needs Blender's environment .venv-blender (bpy)")
def test_blender_camera_projects_as_blender_does():
    r = subprocess.run([str(ROOT / ".venv-blender" / "bin" / "python"), "-c", BLENDER_PROJECTION],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cases = json.loads(r.stdout.split("PROJECTIONS", 1)[1])
    for case in cases:
        from_matrix = {k: v for k, v in case["camera"].items() if not k.startswith(("location", "rotation"))}
        for js in (case["camera"], {**from_matrix, "matrix_world": case["matrix_world"]}):
            cam = BlenderCamera.from_json(js)
            view, K = cam.viewmat(), cam.intrinsics(cam.resolution_x, cam.resolution_y)
            p = torch.tensor(case["points"], dtype=torch.float64) @ view[:3, :3].T + view[:3, 3]
            uv = (p @ K.T)[:, :2] / p[:, 2:]
            blender = torch.tensor(case["pixels"], dtype=torch.float64)
            torch.testing.assert_close(uv, blender[:, :2], rtol=0, atol=1e-3, msg=lambda m: f"{js}: {m}")
            torch.testing.assert_close(p[:, 2], blender[:, 2], rtol=0, atol=1e-5)


def _camera_file(tmp_path, name, content) -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_bad_input_is_one_line_naming_the_file(result, tmp_path, capsys):
    path, _ = result
    garbage = tmp_path / "garbage.gvf4d"
    garbage.write_bytes(b"\x00" * 5)
    no_lens = {k: v for k, v in BLENDER_FOOTAGE_CAMERA.items() if k != "lens"}
    cases = [
        ([tmp_path / "missing.gvf4d"], "missing.gvf4d"),
        ([garbage], "garbage.gvf4d"),
        ([path, "--frames", "2:9"], "take.gvf4d"),
        ([path, "--frames", "one:two"], "--frames"),
        ([path, "--size", "0x10"], "--size"),
        ([path, "--background", "1,1"], "--background"),
        ([path, "--camera", _camera_file(tmp_path, "nolens.json", no_lens)], "nolens.json: missing keys ['lens']"),
        ([path, "--camera", _camera_file(tmp_path, "broken.json", "{")], "broken.json: not a readable JSON"),
        ([path, "--camera", _camera_file(tmp_path, "fit.json", {**BLENDER_FOOTAGE_CAMERA, "sensor_fit": "DIAGONAL"})],
         "fit.json: sensor_fit 'DIAGONAL'"),
        ([path, "--camera", _camera_file(tmp_path, "typo.json", {**BLENDER_FOOTAGE_CAMERA, "lense": 50})],
         "typo.json: unknown keys ['lense']"),
        ([path, "--frames", "0:3", "--camera", _camera_file(tmp_path, "two.json", [BLENDER_FOOTAGE_CAMERA] * 2)],
         "two.json: 2 cameras for 3 frames"),
        ([path, "--camera", tmp_path / "nowhere.json"], "nowhere.json: no such file"),
    ]
    for args, expect in cases:
        out = tmp_path / "out"
        assert _render(*args, "--out", out) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("gvf4d: error: ") and err.count("\n") == 1 and expect in err, (args, err)
        assert not out.exists(), args                                      # nothing done before the check
