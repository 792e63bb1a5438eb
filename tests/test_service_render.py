"""Render jobs of the service for real: a `gvf4d serve` subprocess renders a result into EXR files in the job's
folder, listed and downloaded through the files endpoints, progress per frame, cancelled between frames."""
import json
import math
import time

import numpy as np
import OpenEXR
import pytest

from gvf4d.pipelines.render import EMPTY_DEPTH, RenderRequest, render
from gvf4d.representations import AnimatedGaussians
from gvf4d.result import write_result
from gvf4d.service.client import BackendError
from gvf4d.synthetic import make_synthetic_shot
from test_service import Server, job_body, wait

W, H = 40, 32
CHANNELS = {"R", "G", "B", "A", "Depth.Z"}


def blender_camera(azimuth_deg: float) -> dict:
    """A Blender camera 2 m from the origin at this azimuth (0: at -Y looking along +Y), level, 50 mm lens."""
    a = math.radians(azimuth_deg)
    return {"location": [2 * math.sin(a), -2 * math.cos(a), 0.0], "rotation_euler": [math.pi / 2, 0.0, a],
            "lens": 50.0, "resolution_x": W, "resolution_y": H, "clip_start": 0.01, "clip_end": 100.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("backend")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A 24-frame result of a small moving object (the frames after the first four repeat them)."""
    a = make_synthetic_shot(num_frames=4, gaussians_per_part=20, seed=5).animated
    tracks = {name: getattr(a, name) for name in ("positions", "scales", "quats", "opacities", "sh_dc")}
    repeated = {name: None if v is None else v.repeat(6, *[1] * (v.dim() - 1)) for name, v in tracks.items()}
    path = tmp_path_factory.mktemp("result") / "take.gvf4d"
    write_result(path, AnimatedGaussians(canonical=a.canonical, **repeated), {"fps": 24.0})
    return path


def exr_channels(path) -> dict[str, np.ndarray]:
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {name: np.asarray(c.pixels) for name, c in f.channels().items()}


def files_of(server, job_id: str) -> list[str]:
    return server.client._request("GET", f"/v1/jobs/{job_id}/files")


def test_render_job_writes_what_gvf4d_render_writes(server, result, tmp_path):
    """An animated Blender camera over frames 1:3: the job's EXRs are the pipeline's own, frame by frame."""
    c = server.client
    cameras = [blender_camera(0.0), blender_camera(40.0)]
    job = c.submit({"kind": "render", "result": str(result), "camera": cameras, "frames": "1:3"})
    assert job["request"]["kind"] == "render"
    done = wait(c, job["id"])
    assert done["state"] == "done" and done["progress"] == 1.0 and done["result"] == "frame_0001.exr", done
    assert done["timings"]["render"] > 0
    assert files_of(server, job["id"]) == ["camera.json", "frame_0001.exr", "frame_0002.exr"]
    (tmp_path / "cameras.json").write_text(json.dumps(cameras))
    expected = tmp_path / "expected"
    render(RenderRequest(result=result, out=expected, camera=tmp_path / "cameras.json", frames="1:3", device="cpu"))
    for t in (1, 2):
        got = exr_channels(c.download(job["id"], f"frame_{t:04d}.exr", tmp_path / f"got_{t}.exr"))
        want = exr_channels(expected / f"frame_{t:04d}.exr")
        assert set(got) == CHANNELS and all(v.shape == (H, W) for v in got.values())
        assert 0.9 < got["A"].max() <= 1 and (got["A"] == 0).any()
        assert (got["Depth.Z"][got["A"] == 0] == EMPTY_DEPTH).all()
        for name in CHANNELS:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=f"frame {t} {name}")
    # the two cameras see the object differently: each frame was drawn from its own camera
    assert not np.allclose(exr_channels(tmp_path / "got_1.exr")["A"], exr_channels(tmp_path / "got_2.exr")["A"])


def test_render_a_finished_jobs_result_from_the_footage_camera(server, result, shot_files, tmp_path):
    c = server.client
    generated = c.submit(job_body(shot_files[0], frames=2, fit_iterations=1))
    with pytest.raises(BackendError, match="409 .*render its result once it is done"):
        c.submit({"kind": "render", "result_job": generated["id"]})
    assert wait(c, generated["id"])["state"] == "done"
    job = wait(c, c.submit({"kind": "render", "result_job": generated["id"], "frames": "1", "size": [24, 16],
                            "background": [1.0, 1.0, 1.0], "png": True})["id"])
    assert job["state"] == "done", job
    assert job["request"]["result"].endswith(f"{generated['id']}/result.gvf4d")
    assert files_of(server, job["id"]) == ["frame_0001.exr", "frame_0001.png"]
    px = exr_channels(c.download(job["id"], "frame_0001.exr", tmp_path / "f.exr"))
    assert px["R"].shape == (16, 24) and (px["A"] == 1).all()          # opaque over the background
    corner = [px[k][0, 0] for k in "RGB"]                               # nothing there: the white background
    np.testing.assert_allclose(corner, 1.0, atol=1e-5)


def test_cancel_between_frames(server, result):
    c = server.client
    job = c.submit({"kind": "render", "result": str(result), "camera": blender_camera(10.0)})
    t0 = time.monotonic()
    while (j := c.job(job["id"]))["progress"] == 0 and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    assert j["stage"] == "render" and 0 < j["progress"] < 1, j          # progress per frame
    c.cancel(job["id"])
    assert wait(c, job["id"], timeout=60)["state"] == "cancelled"
    frames = [n for n in files_of(server, job["id"]) if n.endswith(".exr")]
    assert 1 <= len(frames) < 24
    assert not [p for p in (server.data / "jobs" / job["id"]).iterdir() if p.name.startswith(".")]


def test_bad_render_requests_are_refused_before_they_queue(server, result, tmp_path):
    c = server.client
    before = len(c.jobs())
    junk = tmp_path / "junk.gvf4d"
    junk.write_bytes(b"x" * 64)
    no_lens = {k: v for k, v in blender_camera(0.0).items() if k != "lens"}
    render_job = {"kind": "render", "result": str(result)}
    for body, status, message in (
            ({**render_job, "camera": [blender_camera(0.0), no_lens], "frames": "0:2"}, 422,
             r"camera: camera 1: missing keys \['lens'\]"),
            ({**render_job, "camera": [blender_camera(0.0)] * 3, "frames": "0:2"}, 422, "3 cameras for 2 frames"),
            ({**render_job, "camera": {**blender_camera(0.0), "lense": 50}}, 422, r"unknown keys \['lense'\]"),
            ({**render_job, "frames": "20:30"}, 422, "not a non-empty range"),
            ({**render_job, "size": [100_000, 100_000]}, 413, "over the limit"),
            ({**render_job, "camera": [{}] * 100_000}, 413, "cameras 100,000 is over the limit of 3,000 frames"),
            ({**render_job, "background": [2.0, 0.0, 0.0]}, 422, "background must be at most 1"),
            ({**render_job, "blend": "add"}, 422, "blend: Input should be 'display' or 'linear'"),
            ({**render_job, "resolution": 5}, 422, "resolution: Extra inputs are not permitted"),
            ({"kind": "render"}, 422, "a render needs 'result'"),
            ({**render_job, "result": "/dev/zero"}, 422, "is a character device"),
            ({**render_job, "result": str(junk)}, 422, "junk.gvf4d"),
            ({**render_job, "result_job": "0123456789abcdef"}, 422, "not both"),
            ({"kind": "render", "result_job": "0123456789abcdef"}, 404, "no job 0123456789abcdef"),
            ({"kind": "paint"}, 422, "does not match any of the expected tags")):
        with pytest.raises(BackendError, match=f"{status} .*{message}"):
            c.submit(body)
    # non-finite numbers, as JSON's NaN literal
    with pytest.raises(BackendError, match="422 .*location must be a finite number"):
        c.submit({**render_job, "camera": {**blender_camera(0.0), "location": [float("nan"), 0, 0]}})
    assert len(c.jobs()) == before


def test_a_render_job_on_a_ray_actor_without_the_service_files(result, tmp_path):
    """What `serve --ray` does with a render job for an actor on another node: the result travels as bytes, the
    actor renders it in its scratch folder, and the EXRs it returns land in the job's folder."""
    import torch
    from gvf4d.limits import Limits
    from gvf4d.service.ray_files import pack_inputs, write_result_files
    from gvf4d.service.ray_workers import ShotActor
    from gvf4d.service.retention import CACHE_RETENTION
    request = {"kind": "render", "result": str(result), "camera": blender_camera(20.0), "frames": "3:5"}
    assert pack_inputs(request, result.parent) == {}               # in the shared folder: read in place
    bundle = pack_inputs(request, tmp_path / "shared")
    assert bundle == {"result": {"name": result.name, "files": {result.name: result.read_bytes()}}}
    actor = ShotActor(torch.get_num_threads(), Limits(), str(tmp_path / "shared"), CACHE_RETENTION)
    outcome = actor.run("0123abcd", request, bundle, None)
    assert outcome["state"] == "done", outcome.get("trace")
    assert list(outcome["files"]) == ["frame_0003.exr", "frame_0004.exr"]
    write_result_files(tmp_path / "job", outcome["files"])
    (tmp_path / "camera.json").write_text(json.dumps(request["camera"]))
    render(RenderRequest(result=result, out=tmp_path / "expected", camera=tmp_path / "camera.json", frames="3:5",
                         device="cpu"))
    for name in outcome["files"]:
        got, want = exr_channels(tmp_path / "job" / name), exr_channels(tmp_path / "expected" / name)
        assert set(got) == CHANNELS and all(np.array_equal(got[k], want[k]) for k in CHANNELS), name
