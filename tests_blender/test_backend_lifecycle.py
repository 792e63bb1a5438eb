"""The add-on owns its backend, in real Blender with real backend processes: Generate starts one when none runs,
a take is followed again after its .blend is closed and reopened mid-job, results of an unsaved file move beside
it at the first save and its history survives moving the project folder, a killed backend's stale lock file reads
"no backend running", and an API version mismatch names the side to update."""
import http.server
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import bpy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The backend's data folder; every backend the add-on started on it is stopped at the end, by its handle."""
    folder = tmp_path_factory.mktemp("backend")
    yield folder
    from gvf_blender import lifecycle
    lifecycle.stop_started()


@pytest.fixture()
def addon(data_dir):
    """The add-on enabled as Blender enables it (so it has its preferences), pointed at the backend's Python."""
    import addon_utils
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("gvf_blender", default_set=True)
    prefs = bpy.context.preferences.addons["gvf_blender"].preferences
    prefs.python, prefs.data_dir = str(ROOT / ".venv" / "bin" / "python"), str(data_dir)
    yield prefs
    addon_utils.disable("gvf_blender", default_set=True)


def run_timer(until, timeout=300):
    """Runs the add-on's timer body (Blender runs it by itself when it has a window) until until() holds."""
    from gvf_blender.jobs import follow_step
    t0 = time.time()
    while not until():
        assert time.time() - t0 < timeout, bpy.context.scene.gvf4d.status
        follow_step()
        time.sleep(0.2)


def shot_settings(footage, canonical, fit_iterations):
    s = bpy.context.scene.gvf4d
    s.footage, s.canonical = str(footage), str(canonical)
    s.frames, s.fit_iterations = 4, fit_iterations
    return s


def last_take(footage):
    from gvf_blender import takes
    history = takes.takes(bpy.context.scene, str(footage))
    return history[-1] if history else None


def test_generate_starts_the_backend_and_the_take_survives_reopening(addon, data_dir, fixture_dir, tmp_path):
    from gvf_blender import connection, lifecycle
    footage = fixture_dir / "footage"
    s = shot_settings(footage, fixture_dir / "canonical.ply", fit_iterations=6)
    s.precision = "fp32"
    assert lifecycle.started(data_dir) is None
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    assert "starting the backend" in s.status
    process = lifecycle.started(data_dir)
    assert process is not None
    run_timer(lambda: (last_take(footage) or {}).get("state") == "running")
    assert connection.health["answer"]["api_version"] == 1          # the handshake's health answer, for the panel
    take = last_take(footage)
    backend = connection.connect(bpy.context)
    assert backend.job(take["job"])["request"]["precision"] == "fp32"
    # save mid-job, close the file, reopen it: the load handler follows the take again and imports it
    blend = tmp_path / "project" / "shot.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert last_take(footage) is None
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    assert last_take(footage)["state"] in ("queued", "running")
    assert backend.job(take["job"])["state"] == "running"            # still mid-job when the file was reopened
    run_timer(lambda: last_take(footage)["state"] == "done" and "imported" in bpy.context.scene.gvf4d.status)
    take = last_take(footage)
    assert take["result"].startswith("//gvf4d_results/") and (blend.parent / take["result"][2:]).is_file()
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == take["index"])
    assert obj["gvf4d_path"] == take["result"] and obj["gvf4d_frames"] == 4
    assert process.running and lifecycle.started(data_dir) is process


def test_first_save_moves_results_into_the_project_and_moving_it_keeps_history(addon, data_dir, fixture_dir,
                                                                                 tmp_path):
    from gvf_blender import paths, takes
    project = tmp_path / "project"
    footage = project / "footage"
    shutil.copytree(fixture_dir / "footage", footage)
    bpy.ops.wm.read_homefile(use_empty=True)
    shot_settings(footage, fixture_dir / "canonical.ply", fit_iterations=2)
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}            # the backend of the previous test still runs
    run_timer(lambda: "imported" in bpy.context.scene.gvf4d.status)
    take = last_take(footage)
    unsaved = Path(take["result"])
    assert unsaved.is_file() and unsaved.parent == paths.results_dir("")
    obj = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == take["index"])
    assert obj["gvf4d_path"] == str(unsaved)
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
    take = last_take(footage)
    assert take["result"] == f"//gvf4d_results/{unsaved.name}" and (project / take["result"][2:]).is_file()
    assert not unsaved.exists()
    assert obj["gvf4d_path"] == take["result"]
    assert takes.key_of(bpy.context.scene, str(footage)) == "//footage" == obj["gvf4d_shot"]
    bpy.ops.wm.save_mainfile()
    # the project folder moves (footage, results and .blend together): the history and its result follow
    moved = tmp_path / "moved"
    bpy.ops.wm.read_homefile(use_empty=True)
    shutil.move(project, moved)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "shot.blend"))
    take = last_take(moved / "footage")
    assert take is not None and paths.to_absolute(take["result"]) == moved / "gvf4d_results" / unsaved.name
    assert paths.to_absolute(take["result"]).is_file()


def test_a_killed_backend_reads_no_backend_running_and_start_replaces_it(addon, data_dir, fixture_dir):
    from gvf_blender import connection, jobs, lifecycle, lockfile
    process = lifecycle.started(data_dir)
    assert process is not None and (data_dir / lockfile.INFO_NAME).is_file()
    os.kill(process.pid, signal.SIGKILL)
    process.proc.wait(30)
    assert (data_dir / lockfile.INFO_NAME).is_file()                # left behind by the killed backend
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.gvf4d.check_backend()
    assert not (data_dir / lockfile.INFO_NAME).exists()             # stale: removed
    assert bpy.ops.gvf4d.start_backend() == {"FINISHED"}
    run_timer(_answers)
    live = lockfile.read_info(data_dir)
    assert live["pid"] == lifecycle.started(data_dir).pid
    # an empty Backend Python preference is filled in from the running backend's lock file
    addon.python = ""
    assert bpy.ops.gvf4d.check_backend() == {"FINISHED"}
    assert addon.python == live["python"] and Path(addon.python).is_file()
    # Start while one runs uses it: its lock file is kept as it is
    assert bpy.ops.gvf4d.start_backend() == {"FINISHED"}
    assert lockfile.read_info(data_dir) == live
    assert bpy.ops.gvf4d.free_gpu_memory() == {"FINISHED"}
    # a backend on another machine gets the footage and the canonical uploaded (PUT /v1/uploads)
    s = shot_settings(fixture_dir / "footage", fixture_dir / "canonical.ply", fit_iterations=1)
    sent = jobs.upload_inputs(connection.connect(bpy.context), s.request(bpy.context))
    uploaded = Path(sent["footage"])
    assert Path(sent["recorded_footage"]) == (fixture_dir / "footage").resolve()    # the result names the plate here
    assert uploaded.parent == data_dir / "uploads" == Path(sent["canonical_path"]).parent.parent
    assert sorted(p.name for p in uploaded.iterdir() if p.suffix == ".png") == \
        sorted(p.name for p in (fixture_dir / "footage").iterdir() if p.suffix == ".png")
    assert Path(sent["canonical_path"]).read_bytes() == (fixture_dir / "canonical.ply").read_bytes()
    report = _report()
    assert "API 1" in report and "torch " in report and "CUDA " in report
    assert bpy.ops.gvf4d.stop_backend() == {"FINISHED"}
    assert lifecycle.started(data_dir) is None and not (data_dir / lockfile.INFO_NAME).exists()
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.gvf4d.check_backend()


def test_without_a_backend_the_messages_say_how_to_start_one(addon, fixture_dir, tmp_path):
    addon.python, addon.data_dir = "", str(tmp_path / "empty")
    shot_settings(fixture_dir / "footage", fixture_dir / "canonical.ply", fit_iterations=1)
    with pytest.raises(RuntimeError, match="no backend running — Start .* set the backend's Python"):
        bpy.ops.gvf4d.generate()
    addon.python = str(tmp_path / "no-python")
    with pytest.raises(RuntimeError, match="cannot start the backend with .*no-python"):
        bpy.ops.gvf4d.start_backend()


def _answers() -> bool:
    from gvf_blender import connection
    return connection.refresh(bpy.context) is not None


def _report() -> str:
    from gvf_blender import diagnostics
    return diagnostics.report(bpy.context)


class FakeHealth(http.server.BaseHTTPRequestHandler):
    """A backend that only answers /v1/health, with the API version the test sets."""
    answer: dict = {}

    def do_GET(self):
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("api_version, side", [(2, "update the GVF4D add-on"), (None, "update the backend")])
def test_api_version_mismatch_names_the_side_to_update(addon, api_version, side):
    FakeHealth.answer = {"version": "9.9", "status": "ok", "workers": []} | \
        ({"api_version": api_version} if api_version is not None else {})
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        addon.backend_url, addon.token = f"http://127.0.0.1:{server.server_port}", "t"
        with pytest.raises(RuntimeError, match=side):
            bpy.ops.gvf4d.check_backend()
    finally:
        server.shutdown()
        server.server_close()


def test_out_of_memory_advice_changes_the_shot_settings(addon):
    s = bpy.context.scene.gvf4d
    s.frames, s.mesh_samples, s.precision = 48, 100_000, "fp32"
    for action in ("FRAMES", "GAUSSIANS", "PRECISION"):
        assert bpy.ops.gvf4d.reduce_memory(action=action) == {"FINISHED"}
    assert (s.frames, s.mesh_samples, s.precision) == (24, 50_000, "fp16")
    assert s.request(bpy.context)["precision"] == "fp16" and s.request(bpy.context)["mesh_samples"] == 50_000


def test_progress_shows_the_time_left_in_the_stage():
    from gvf_blender.jobs import Followed, progress_text
    followed = Followed("Scene", "job", stage="fit", stage_seen=100.0, stage_fraction=0.0, since=40.0)
    text = progress_text({"state": "running", "stage": "fit", "progress": 0.25}, followed, now=110.0)
    assert text == "fit 25% · about 30 s left in this stage · 1 min 10 s so far"


def test_the_export_file_name_follows_the_format(addon):
    from gvf_blender.operators.import_export import GVF4D_OT_export, match_filter_to_format
    dialog = SimpleNamespace(filepath="/shots/take.glb", format="ABC", filter_glob="*.glb")
    assert GVF4D_OT_export.check(dialog, bpy.context) is True
    assert dialog.filepath == "/shots/take.abc"
    match_filter_to_format(dialog, bpy.context)
    assert dialog.filter_glob == "*.abc"
    dialog.format = "GLTF"
    assert GVF4D_OT_export.check(dialog, bpy.context) and dialog.filepath == "/shots/take.glb"
