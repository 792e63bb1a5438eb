"""In real Blender (bpy 5.0.1): Cycles motion blur of the moving splat.

A motion-blurred frame integrates the scene over the shutter, so it must match the average of sharp renders at
sub-frames across the shutter, and be much closer to it than the sharp render at the shutter's centre. Cycles
evaluates the object at its motion steps and matches the quads instanced on the points by their index (the points
keep their count over time), so each quad moves with its Gaussian; the points display blurs as a deforming point
cloud. fidelity.gvf4d moves, turns, grows, fades and recolours its Gaussians (tools/make_blender_fixture.py).
"""
import numpy as np
import pytest

import bpy
from test_splat_fidelity import START, fidelity, render, srgb_to_linear  # noqa: F401 (fidelity: a fixture)

SEGMENT = 3          # the shutter spans result frames 3 to 4: the fixture's largest motion, one linear segment
SUBFRAMES = 8


@pytest.mark.parametrize("display", ["splat", "points"])
def test_cycles_blurs_the_motion_over_the_shutter(fidelity, tmp_path, display):
    from gvf_blender import footage_camera, importer, scene_setup
    obj, _, meta, _ = fidelity
    importer.set_display(obj, display)
    scene = bpy.context.scene
    footage_camera.match_scene(scene, meta, START)
    scene_setup.apply_look_settings(scene)
    scene.render.resolution_percentage = 50        # 80 x 60 px

    def linear(path, samples=4):
        """A render as linear premultiplied light over white (what averages over time) and its alpha."""
        rgb, alpha = render(scene, path, samples=samples)
        return srgb_to_linear(rgb), alpha

    frame = START + SEGMENT
    sharp = []
    for i in range(SUBFRAMES):
        scene.frame_set(frame, subframe=(i + 0.5) / SUBFRAMES)
        sharp.append(linear(tmp_path / f"sub_{i}.png"))
    average = [np.mean(values, 0) for values in zip(*sharp)]
    scene.frame_set(frame, subframe=0.5)
    centre = linear(tmp_path / "centre.png", samples=8)
    scene.render.use_motion_blur = True
    scene.render.motion_blur_position = "CENTER"
    scene.render.motion_blur_shutter = 1.0          # one frame: from result frame 3 to 4
    blurred = linear(tmp_path / "blurred.png", samples=8)
    for k, what in enumerate(("rgb", "alpha")):
        unblurred = np.abs(centre[k] - average[k]).mean()
        error = np.abs(blurred[k] - average[k]).mean()
        assert unblurred > 0.01, (what, unblurred)              # the splat moves enough to tell
        assert error < 0.45 * unblurred, (what, error, unblurred)
