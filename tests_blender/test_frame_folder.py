"""Long shots' tracks referenced in a frame folder (gvf_blender/frame_cache.py) rather than embedded in the .blend:
the same animation, a small .blend, the folder reused while current and carried with the result when it moves."""
import os
import shutil
import uuid

import numpy as np
import pytest

import bpy
from gvf_blender.result_file import GVF4DFile

from test_splat_fidelity import evaluated_points as evaluated_tracks

TRACKS = ("position", "rotation", "scale", "opacity", "color")
# a referenced import against an embedded one: positions exact, the other tracks within their uint16 step
# (frame_cache.QUANTISED: rotations 2/65535, opacity 1/65535, colour 3/65535, scales 22/65535 of their log)
MATCH = {"position": dict(atol=1e-6), "rotation": dict(atol=1e-4), "scale": dict(rtol=2e-4, atol=1e-9),
         "opacity": dict(atol=1e-5), "color": dict(atol=3e-5)}


@pytest.fixture()
def result(empty_scene, fixture_dir, tmp_path):
    """A copy of the fixture whose every track moves, in a folder of its own."""
    path = tmp_path / "take.gvf4d"
    shutil.copy2(fixture_dir / "fidelity.gvf4d", path)
    return path


def test_referenced_frames_play_as_embedded_ones_and_keep_the_blend_small(result, tmp_path):
    from gvf_blender import frame_cache, importer
    from gvf_blender.result_file import GVF4DFile
    f = GVF4DFile(result)
    embedded = importer.import_splats(result, name="embedded", frame_start=3, frame_data="EMBEDDED")
    referenced = importer.import_splats(result, name="referenced", frame_start=3, frame_data="REFERENCED")
    assert (embedded["gvf4d_frame_data"], referenced["gvf4d_frame_data"]) == ("EMBEDDED", "REFERENCED")
    assert not any(a.name.startswith("gvf_p_") for a in referenced.data.attributes)
    folder = frame_cache.folder_for(result)
    assert sorted(p.name for p in folder.iterdir()) == ["cache.json"] + [f"frame_{t:04d}.ply"
                                                                        for t in range(f.num_frames)]
    # whole frames, a sub-frame (every track blended), and before and after the range
    for frame, subframe in ((3, 0.0), (4, 0.25), (5, 0.5), (3 + f.num_frames - 1, 0.0), (0, 0.0), (40, 0.0)):
        a, b = evaluated_tracks(embedded, frame, subframe), evaluated_tracks(referenced, frame, subframe)
        for name in TRACKS:
            np.testing.assert_allclose(b[name], a[name], **MATCH[name], err_msg=f"{name} at frame {frame + subframe}")
    # the moving tracks really move: frame 4.25 differs from frame 3
    assert np.abs(evaluated_tracks(referenced, 4, 0.25)["scale"] - evaluated_tracks(referenced, 3)["scale"]).max() > 1e-4
    # the embedded import's mesh carries every frame into the .blend; the referenced one's only the canonical
    sizes = {}
    for obj in (embedded, referenced):
        blend = tmp_path / f"{obj.name}.blend"
        bpy.data.libraries.write(str(blend), {obj.data}, compress=False)
        sizes[obj.name] = blend.stat().st_size
    assert sizes["embedded"] - sizes["referenced"] > 0.5 * frame_cache.track_bytes(f)


def test_quantised_tracks_round_trip_within_half_a_step():
    from gvf_blender import frame_cache
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1000, 4))
    cases = {"rotation": frame_cache.unit_quaternions(q), "opacity": rng.random((1000, 1)),
             "color": rng.uniform(-1.0, 2.0, (1000, 3)), "scale": np.exp(rng.uniform(-12.0, 1.0, (1000, 3)))}
    for track, values in cases.items():
        low, high, log = frame_cache.QUANTISED[track]
        back = frame_cache.dequantise(track, frame_cache.quantise(track, values.astype(np.float32)))
        error = np.abs(np.log(back) - np.log(values)) if log else np.abs(back - values)
        assert error.max() <= 0.5 * (high - low) / frame_cache.STEPS * 1.01, track
    # outside the range: clamped, never wrapped
    assert frame_cache.quantise("opacity", np.array([[-0.5], [1.5]], np.float32)).ravel().tolist() == [0, 65535]
    assert frame_cache.quantise("scale", np.array([[0.0, 1e-12, 1e9]], np.float32)).ravel().tolist() == [0, 0, 65535]


def test_points_deleted_in_edit_mode_keep_their_gaussians_tracks(result):
    """Deleting points shifts the later points' indices; a referenced import still reads each point's own row of
    the frame files, as an embedded import reads its own attributes."""
    import bmesh
    from gvf_blender import importer
    objects = [importer.import_splats(result, frame_data=kind) for kind in ("EMBEDDED", "REFERENCED")]
    for obj in objects:
        bm = bmesh.new()
        bm.from_mesh(obj.data)
        bm.verts.ensure_lookup_table()
        bmesh.ops.delete(bm, geom=[bm.verts[i] for i in (0, 5, 17)], context="VERTS")
        bm.to_mesh(obj.data)
        bm.free()
    for frame, subframe in ((2, 0.0), (3, 0.5)):
        a, b = (evaluated_tracks(obj, frame, subframe) for obj in objects)
        for name in TRACKS:
            np.testing.assert_allclose(b[name], a[name], **MATCH[name], err_msg=f"{name} at frame {frame + subframe}")


def test_a_missing_frame_file_leaves_the_splat_at_its_canonical_values(result):
    from gvf_blender import frame_cache, importer
    from gvf_blender.result_file import GVF4DFile
    f = GVF4DFile(result)
    obj = importer.import_splats(result, frame_start=1, frame_data="REFERENCED")
    (frame_cache.folder_for(result) / "frame_0002.ply").unlink()
    p = evaluated_tracks(obj, 3)                                  # result frame 2
    np.testing.assert_allclose(p["position"], f.array("canonical.position"), atol=1e-6)
    np.testing.assert_allclose(p["scale"], f.array("canonical.scale"), rtol=1e-6)    # the canonical, not quantised
    assert not np.allclose(evaluated_tracks(obj, 2)["position"], f.array("canonical.position"), atol=1e-4)


def test_frame_folder_is_reused_while_current_and_rebuilt_when_not(result):
    from gvf_blender import frame_cache, importer
    folder = frame_cache.folder_for(result)
    importer.import_splats(result, frame_data="REFERENCED")
    first = folder / "frame_0000.ply"
    stamp = first.stat().st_mtime_ns
    importer.import_splats(result, frame_data="REFERENCED")
    assert first.stat().st_mtime_ns == stamp                     # current: reused as it is
    (folder / "frame_0002.ply").unlink()                          # a frame missing: rebuilt
    importer.import_splats(result, frame_data="REFERENCED")
    assert (folder / "frame_0002.ply").is_file() and first.stat().st_mtime_ns != stamp
    stamp = first.stat().st_mtime_ns
    os.utime(result, ns=(result.stat().st_atime_ns, result.stat().st_mtime_ns + 10**9))   # the result changed
    importer.import_splats(result, frame_data="REFERENCED")
    assert first.stat().st_mtime_ns != stamp


def test_a_frame_folder_that_cannot_be_written_is_one_error_naming_it(result):
    import gvf_blender
    from gvf_blender import frame_cache
    frame_cache.folder_for(result).write_text("not a folder")
    gvf_blender.register()
    try:
        objects = len(bpy.data.objects)
        with pytest.raises(RuntimeError, match="cannot write its frame folder .*take.frames"):
            bpy.ops.gvf4d.import_result(filepath=str(result), frame_data="REFERENCED")
        assert len(bpy.data.objects) == objects
        assert bpy.ops.gvf4d.import_result(filepath=str(result), frame_data="EMBEDDED") == {"FINISHED"}
    finally:
        gvf_blender.unregister()


def test_frame_folder_moves_with_the_result_into_the_saved_project(empty_scene, fixture_dir, tmp_path):
    """A take made before the first save lives in the temporary results folder; saving moves it with its frame
    folder into //gvf4d_results/, the animation then reads '//gvf4d_results/NAME.frames' and still plays after
    the whole project folder moves."""
    from gvf_blender import frame_cache, handlers, importer, paths, splat_nodes, takes
    unsaved = paths.results_dir("") / f"take_{uuid.uuid4().hex[:8]}.gvf4d"
    unsaved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fixture_dir / "fidelity.gvf4d", unsaved)
    footage = tmp_path / "project" / "plate.mp4"
    footage.parent.mkdir()
    footage.write_bytes(b"plate")
    takes.add_take(bpy.context.scene, str(footage), {}, "job-1", result=str(unsaved))
    obj = importer.import_splats(unsaved, frame_data="REFERENCED")
    name = obj.name
    expected = evaluated_tracks(obj, 2, 0.5)
    handlers.register()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "project" / "shot.blend"))
    finally:
        handlers.unregister()
    assert not unsaved.exists() and not frame_cache.folder_for(unsaved).exists()
    stored = f"//gvf4d_results/{unsaved.stem}.frames"
    assert splat_nodes.group_input(obj.modifiers["GVF4D Animation"], "Frame Folder") == stored
    assert (tmp_path / "project" / stored[2:] / "frame_0000.ply").is_file()
    np.testing.assert_allclose(evaluated_tracks(obj, 2, 0.5)["position"], expected["position"], atol=1e-6)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    shutil.move(tmp_path / "project", tmp_path / "moved")
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "moved" / "shot.blend"))
    obj = bpy.data.objects[name]
    for name in TRACKS:
        np.testing.assert_allclose(evaluated_tracks(obj, 2, 0.5)[name], expected[name], atol=1e-6)   # same files


def _slow_frames(monkeypatch, seconds=0.15):
    """Frame files written slowly, so that a test sees the writer thread at work."""
    import time
    from gvf_blender import frame_cache
    write_frame = frame_cache.write_frame

    def slow(*args):
        time.sleep(seconds)
        write_frame(*args)
    monkeypatch.setattr(frame_cache, "write_frame", slow)


@pytest.fixture()
def addon(empty_scene):
    import gvf_blender
    gvf_blender.register()
    yield
    gvf_blender.unregister()


def _done_take(scene, result, footage):
    """A take whose job is done and whose result is downloaded, as the jobs' timer leaves it."""
    from gvf_blender import takes
    take = takes.add_take(scene, str(footage), {"engine": "fit"}, f"job-{uuid.uuid4().hex[:6]}", result=str(result))
    takes.update_take(scene, str(footage), take["index"], state="done")
    return take["job"]


def test_a_take_saved_while_its_frame_folder_is_written_is_imported_from_the_saved_project(
        addon, fixture_dir, tmp_path, monkeypatch):
    """The first save moves results into //gvf4d_results/: it waits for the thread writing the take's frame folder,
    moves the complete folder with the result, and the take is then imported from there."""
    from gvf_blender import frame_cache, importer, jobs, paths, takes
    monkeypatch.setattr(importer, "EMBED_LIMIT", 0)
    _slow_frames(monkeypatch)
    unsaved = paths.results_dir("") / f"take_{uuid.uuid4().hex[:8]}.gvf4d"
    unsaved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fixture_dir / "fidelity.gvf4d", unsaved)
    job = _done_take(bpy.context.scene, unsaved, tmp_path / "project" / "plate.mp4")
    assert "writing its frame folder" in jobs.finish_take(bpy.context.scene, job)
    assert takes.find_job(bpy.context.scene, job)[1]["importing"]
    (tmp_path / "project").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "project" / "shot.blend"))   # the writer is at work
    moved = tmp_path / "project" / "gvf4d_results" / unsaved.name
    assert moved.is_file() and not unsaved.exists() and not frame_cache.folder_for(unsaved).exists()
    while jobs.follow_step() is not None:
        pass
    key, take = takes.find_job(bpy.context.scene, job)
    assert not take["importing"] and "imported" in bpy.context.scene.gvf4d.status, bpy.context.scene.gvf4d.status
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == take["index"])
    assert importer.frame_folder(obj) == frame_cache.folder_for(moved)
    assert frame_cache.is_current(frame_cache.folder_for(moved), GVF4DFile(moved))


def test_a_take_left_importing_is_imported_on_reopen_without_a_backend(addon, fixture_dir, tmp_path, monkeypatch):
    """Blender closed while a take's frame folder was written: opening the .blend again imports the take (its
    result is on disk, no backend needed), the progress shown while the folder is written."""
    from gvf_blender import importer, jobs, takes
    from gvf_blender.result_file import GVF4DFile
    monkeypatch.setattr(importer, "EMBED_LIMIT", 0)
    _slow_frames(monkeypatch)
    result = tmp_path / "take.gvf4d"
    shutil.copy2(fixture_dir / "fidelity.gvf4d", result)
    job = _done_take(bpy.context.scene, result, tmp_path / "plate.mp4")
    takes.update_take(bpy.context.scene, str(tmp_path / "plate.mp4"), 0, importing=True)
    assert takes.to_import(bpy.context.scene) == [job] and takes.to_follow(bpy.context.scene) == []
    jobs.follow_open_file()                    # as the load handler calls it
    seen = []
    while jobs.follow_step() is not None:
        seen.append(bpy.context.scene.gvf4d.status)
    frames = GVF4DFile(result).num_frames
    assert any(f"/{frames} frames" in status for status in seen), seen
    assert not takes.find_job(bpy.context.scene, job)[1]["importing"]
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == 0)
    assert obj["gvf4d_frame_data"] == "REFERENCED"
