"""Submit -> progress -> import, driven through the add-on against a real backend process on loopback."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import bpy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    data = tmp_path_factory.mktemp("backend")
    proc = subprocess.Popen([str(ROOT / ".venv/bin/gvf4d"), "serve", "--data", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = data / "backend.lock.json"
    for _ in range(600):
        if lock.is_file():
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    time.sleep(1.0)
    old = os.environ.get("GVF4D_HOME")
    os.environ["GVF4D_HOME"] = str(data)
    yield proc, data
    os.environ.pop("GVF4D_HOME") if old is None else os.environ.__setitem__("GVF4D_HOME", old)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture()
def addon():
    import gvf_blender
    bpy.ops.wm.read_factory_settings(use_empty=True)
    gvf_blender.register()
    yield gvf_blender
    gvf_blender.unregister()


def follow(timeout=300):
    """Runs the add-on's timer body until no take is followed any more."""
    from gvf_blender.jobs import follow_step
    t0 = time.time()
    while follow_step() is not None:
        assert time.time() - t0 < timeout, bpy.context.scene.gvf4d.status
        time.sleep(0.2)


def test_generate_imports_takes_and_history_survives_reopen(backend, addon, fixture_dir, tmp_path):
    from gvf_blender import takes
    s = bpy.context.scene.gvf4d
    s.footage, s.canonical = str(fixture_dir / "footage"), str(fixture_dir / "canonical.ply")
    s.frames, s.fit_iterations, s.frame_start = 4, 2, 7
    assert bpy.ops.gvf4d.check_backend() == {"FINISHED"}
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    follow()
    shot = str(fixture_dir / "footage")
    history = takes.takes(bpy.context.scene, shot)
    assert history[0]["state"] == "done" and Path(history[0]["result"]).is_file(), history
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == 0)
    assert obj["gvf4d_frames"] == 4 and obj["gvf4d_frame_start"] == 7
    assert "imported" in s.status
    # rerun with other settings: a second take, the backend reuses the shot's stages
    s.fit_iterations = 3
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    follow()
    history = takes.takes(bpy.context.scene, shot)
    assert [t["state"] for t in history] == ["done", "done"]
    assert history[1]["reused_stages"] == ["ingest", "canonical", "align"]
    assert takes.active(bpy.context.scene, shot)["index"] == 1
    assert bpy.ops.gvf4d.activate_take(index=0) == {"FINISHED"}
    shown = {o["gvf4d_take"]: o.hide_viewport for o in bpy.context.scene.objects if o.get("gvf4d_shot") == shot}
    assert shown == {0: False, 1: True}
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert takes.takes(bpy.context.scene, shot) == []
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = takes.takes(bpy.context.scene, shot)
    assert len(reopened) == 2 and reopened[1]["settings"]["fit_iterations"] == 3
    assert takes.active(bpy.context.scene, shot)["index"] == 0
    # a take made after the .blend is saved lands next to it, stored as a relative path
    s = bpy.context.scene.gvf4d
    s.fit_iterations = 2
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    follow()
    third = takes.takes(bpy.context.scene, shot)[2]
    assert third["result"].startswith("//gvf4d_results/") and (tmp_path / third["result"][2:]).is_file()


def test_cancel_and_readable_errors(backend, addon, fixture_dir):
    from gvf_blender import takes
    from gvf_blender.jobs import follow_step
    s = bpy.context.scene.gvf4d
    s.footage, s.canonical = str(fixture_dir / "footage"), str(fixture_dir / "canonical.ply")
    s.frames, s.fit_iterations = 4, 500
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    shot = str(fixture_dir / "footage")
    for _ in range(600):
        follow_step()
        if takes.takes(bpy.context.scene, shot)[-1]["state"] == "running":
            break
        time.sleep(0.1)
    assert bpy.ops.gvf4d.cancel() == {"FINISHED"}
    follow(timeout=120)
    assert takes.takes(bpy.context.scene, shot)[-1]["state"] == "cancelled"
    # the backend names a missing file in words
    s.canonical = str(fixture_dir / "nope.ply")
    with pytest.raises(RuntimeError, match="canonical splat .*nope.ply does not exist"):
        bpy.ops.gvf4d.generate()


def test_generate_from_the_active_movie_clip(backend, addon, fixture_dir):
    from gvf_blender import takes
    clip = bpy.data.movieclips.load(str(fixture_dir / "footage" / "frame_0000.png"))
    clip.frame_start = 20
    bpy.context.scene.active_clip = clip
    s = bpy.context.scene.gvf4d
    s.source, s.canonical, s.frames, s.fit_iterations = "CLIP", str(fixture_dir / "canonical.ply"), 4, 2
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    follow()
    shot = str(fixture_dir / "footage" / "frame_0000.png")
    assert takes.takes(bpy.context.scene, shot)[-1]["state"] == "done"
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_shot") == shot)
    assert obj["gvf4d_frame_start"] == 20          # frame 1 of the result on the clip's start frame


def test_selected_object_as_canonical_mesh(addon, fixture_dir):
    """The active object goes to the backend as a GLB (the backend side: tests/test_canonical_sources.py)."""
    import json
    import struct
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0, 0, 0))
    sphere = bpy.context.view_layer.objects.active
    s = bpy.context.scene.gvf4d
    s.source, s.footage, s.frames, s.fit_iterations = "FILE", str(fixture_dir / "footage"), 3, 1
    s.canonical_source, s.import_as = "object", "MESH"
    request = s.request(bpy.context)
    assert request["canonical"] == "mesh" and request["mesh"] is True
    glb = request["canonical_path"]
    with open(glb, "rb") as f:
        magic, _, _, chunk_len, _ = struct.unpack("<4sIIII", f.read(20))
        gltf = json.loads(f.read(chunk_len))
    assert magic == b"glTF" and gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"] is not None
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert accessor["count"] >= len(sphere.data.vertices)
    bpy.data.objects.remove(sphere)
    s.canonical_source, s.import_as = "splat", "SPLATS"


def test_a_long_take_writes_its_frame_folder_in_a_thread_then_imports(backend, addon, fixture_dir, monkeypatch):
    """A result past the embedding limit (lowered here, so a 4-frame take counts as long) is imported referencing
    its frame folder, written in a thread while the timer keeps running and shows how far it is."""
    from gvf_blender import frame_cache, importer, jobs, paths, takes
    from test_frame_folder import _slow_frames
    monkeypatch.setattr(importer, "EMBED_LIMIT", 0)
    _slow_frames(monkeypatch)
    s = bpy.context.scene.gvf4d
    s.footage, s.canonical = str(fixture_dir / "footage"), str(fixture_dir / "canonical.ply")
    s.frames, s.fit_iterations = 4, 2
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    seen, t0 = [], time.time()
    while jobs.follow_step() is not None:
        seen.append(s.status)
        assert time.time() - t0 < 300, s.status
        time.sleep(0.05)
    assert any(status.endswith("/4 frames") for status in seen), seen     # the timer ran while the thread wrote
    take = takes.takes(bpy.context.scene, str(fixture_dir / "footage"))[-1]
    assert take["state"] == "done" and not take["importing"] and "imported" in s.status
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == take["index"])
    assert obj["gvf4d_frame_data"] == "REFERENCED"
    assert frame_cache.folder_for(paths.to_absolute(take["result"])).joinpath("cache.json").is_file()
