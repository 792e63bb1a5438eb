"""Generation jobs followed from Blender: submit (starting a local backend first when none runs), poll from a
timer (never blocking for long), download each finished result and import it as the shot's new take.

Followed jobs are kept by (scene name, job id) while the add-on is registered; the load handler follows an
opened .blend's unfinished takes again, so a job still running, or finished while Blender was closed, is picked
up. Progress shows the stage, its share done and an estimate of the time left in it. A long shot's frame folder
(frame_cache.py) is written in a thread before its import, so Blender stays responsive meanwhile.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bpy

from . import backend_render, connection, frame_cache, importer, lifecycle, paths, takes
from .backend import Backend, BackendError, BackendStarting, NoBackend
from .result_file import GVF4DFile

FINISHED = ("done", "failed", "cancelled", "interrupted")
POLL_INTERVAL = 0.5            # seconds between the timer's polls
HEALTH_INTERVAL = 5.0          # seconds between health refreshes (free GPU memory) while jobs run
OUT_OF_MEMORY = "out of GPU memory"    # how the backend's failure message of an out-of-memory job begins


@dataclass
class Followed:
    """A job the timer follows, with what its time estimate needs: when its current stage was first seen and
    how far along it was then."""
    scene: str
    job: str
    stage: str = ""
    stage_seen: float = 0.0
    stage_fraction: float = 0.0
    since: float = field(default_factory=time.monotonic)
    # a job that is not a take (a render): called with (scene, backend, job, progress text) at each poll
    on_change: Callable[[bpy.types.Scene, Backend, dict, str], None] | None = None


@dataclass
class Pending:
    """A Generate waiting for the backend this session is starting."""
    scene: str
    footage: str
    request: dict
    take_fields: dict


@dataclass
class Preparing:
    """A done take whose frame folder a thread writes before it is imported: its job, frames written so far, of
    how many, and the error that stopped the writer. The take itself is looked up again when it is imported (a
    save meanwhile may have moved its result and re-keyed its history)."""
    scene: str
    job: str
    thread: threading.Thread | None = None
    written: int = 0
    frames: int = 0
    error: str | None = None


_followed: dict[tuple[str, str], Followed] = {}
_preparing: dict[tuple[str, str], Preparing] = {}
_pending: list[Pending] = []
_starting: lifecycle.BackendProcess | None = None    # a backend this session started, awaited by the timer
_next_health = 0.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(job: dict, followed: Followed, now: float | None = None) -> str:
    """'fit 40% · about 1 min 30 s left in this stage · 2 min 05 s so far': the stage, its share done and the
    time left in it, extrapolated from its progress since it was first seen."""
    now = time.monotonic() if now is None else now
    fraction = float(job.get("progress") or 0.0)
    text = f"{job.get('stage') or job['state']} {100 * fraction:.0f}%"
    rate = (fraction - followed.stage_fraction) / max(now - followed.stage_seen, 1e-6)
    if job["state"] == "running" and 0.0 < fraction < 1.0 and rate > 0 and now - followed.stage_seen >= 1.0:
        text += f" · about {_duration((1.0 - fraction) / rate)} left in this stage"
    return f"{text} · {_duration(now - followed.since)} so far"


def upload_inputs(backend: Backend, request: dict) -> dict:
    """For a backend on another machine: sends the footage (a file, or an image folder's files) and the canonical
    file, each into an upload folder of its own (PUT /v1/uploads), and points the request at the copies there."""
    request = dict(request)
    footage, upload_id = Path(request["footage"]), uuid.uuid4().hex[:16]
    request["recorded_footage"] = str(footage)         # the result names the plate as this machine finds it
    if footage.is_dir():
        for frame in sorted(p for p in footage.iterdir() if p.is_file() and not p.name.startswith(".")):
            request["footage"] = str(Path(backend.upload(frame, upload_id)).parent)
    else:
        request["footage"] = backend.upload(footage, upload_id)
    if request.get("canonical_path"):
        request["canonical_path"] = backend.upload(Path(request["canonical_path"]), uuid.uuid4().hex[:16])
    return request


def submit_take(scene, backend: Backend, footage: str, request: dict, take_fields: dict | None = None) -> dict:
    """Sends the job, records a take for it and follows it. request: the backend's job fields (footage,
    canonical_path, ... as paths on this machine); take_fields: what the import needs later (frame_start,
    import_as, display), recorded with the take so a take finished after reopening imports as asked."""
    sent = upload_inputs(backend, request) if connection.is_remote(backend) else request
    job = backend.submit(sent)
    take = takes.add_take(scene, footage, request, job["id"])
    takes.update_take(scene, footage, take["index"], **(take_fields or {}))
    follow(scene, job["id"])
    return take


def generate(context, footage: str, request: dict, take_fields: dict) -> str:
    """Generate: submits the take, or, when no local backend runs and the preferences say what starts one,
    starts it and submits once it answers. Returns the status to show; BackendError when neither can be done."""
    scene = context.scene
    try:
        backend = connection.connect(context)
    except (NoBackend, BackendStarting) as e:
        process = lifecycle.started(connection.data_dir(context))
        if process is None and isinstance(e, BackendStarting):
            raise
        if process is None and not connection.executable(context):
            raise NoBackend(f"{e}; set the backend's Python in the GVF4D add-on preferences first") from None
        await_backend(process or connection.start(context, request.get("weights") or ""))
        _pending.append(Pending(scene.name, footage, request, take_fields))
        return "starting the backend; the take is sent when it answers"
    take = submit_take(scene, backend, footage, request, take_fields)
    return f"take {take['index']} queued"


def poll_take(scene, backend: Backend, job_id: str) -> dict:
    """One non-blocking step: asks the backend for the job's state, records it in the take, and downloads the
    result into the results folder when it is done. Returns the backend's job."""
    key, take = takes.find_job(scene, job_id)
    job = backend.job(job_id)
    fields = {"state": job["state"], "stage": job["stage"], "progress": job["progress"]}
    if job["state"] == "done" and not take.get("result"):
        dest = paths.results_dir() / f"take_{take['index']:03d}_{job_id}.gvf4d"
        backend.download(job_id, job["result"], dest)
        fields["result"] = paths.to_stored(dest)
        fields["reused_stages"] = job.get("reused_stages", [])
    if job["state"] == "failed":
        fields["error"] = job.get("error") or "failed"
    takes.update_take(scene, key, take["index"], **fields)
    return job


def import_take(scene, key: str, take: dict) -> bpy.types.Object:
    """Imports a done take's result as it was asked at Generate (splats or deformed mesh, display, start frame)."""
    settings = scene.gvf4d
    as_mesh = take.get("import_as", settings.import_as) == "MESH"
    kwargs = {"placement": take.get("placement", "AUTO")}
    if not as_mesh:
        kwargs["display"] = take.get("display", settings.display)
    importer_fn = importer.import_mesh if as_mesh else importer.import_splats
    obj = importer_fn(str(paths.to_absolute(take["result"])), name=f"{Path(key).stem}_take{take['index']}",
                      frame_start=take.get("frame_start", settings.frame_start), **kwargs)
    for other in bpy.data.objects:          # a new take hides the shot's earlier ones (the artist may show them)
        if other is not obj and other.get("gvf4d_shot") == key:
            importer.hide_take(other)
    obj["gvf4d_shot"], obj["gvf4d_take"] = key, take["index"]
    obj["gvf4d_path"] = take["result"]          # stored like the take's: relative to the .blend when below it
    takes.set_active(scene, key, take["index"])
    return obj


def follow(scene, job_id: str, on_change=None) -> None:
    """Follows the job from the timer until it finishes: a take's, or any other job's with `on_change` (Followed)."""
    _followed.setdefault((scene.name, job_id), Followed(scene.name, job_id, on_change=on_change))
    _ensure_timer()


def follow_open_file() -> None:
    """Follows the takes of every scene that may still change and the render jobs it waits for (after a .blend
    is opened, a backend started); imports the takes that were done but not yet imported (no backend needed)."""
    for scene in bpy.data.scenes:
        for job_id in takes.to_follow(scene):
            follow(scene, job_id)
        for job_id in takes.to_import(scene):
            finish_take(scene, job_id)
        for job_id, follower in backend_render.remembered(scene).items():
            follow(scene, job_id, follower)


def followed_job(scene, footage: str) -> str | None:
    """The job of the shot's latest followed take, None when none of its takes runs."""
    history = takes.takes(scene, footage)
    for take in reversed(history):
        if (scene.name, take["job"]) in _followed:
            return take["job"]
    return None


def await_backend(process: lifecycle.BackendProcess) -> None:
    """Watches a backend this session started from the timer: once it answers, the panel shows its health, the
    open file's unfinished takes are followed and the Generates that waited for it are sent."""
    global _starting
    _starting = process
    _ensure_timer()


def busy() -> bool:
    """Whether the timer has anything to do (jobs to follow, frame folders being written, a backend starting)."""
    return bool(_followed or _preparing or _pending or _starting is not None)


def stop_following() -> None:
    global _starting
    if bpy.app.timers.is_registered(follow_step):
        bpy.app.timers.unregister(follow_step)
    _followed.clear()
    _preparing.clear()         # a thread still writing finishes its folder; a reopen imports the take
    _pending.clear()
    _starting = None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(follow_step):
        bpy.app.timers.register(follow_step, first_interval=POLL_INTERVAL)


def _backend_ready(context) -> bool:
    """Once the awaited backend answers: refreshes its health, follows the open file's unfinished takes and
    submits the Generates that waited for it. False while it still starts."""
    global _starting
    try:
        if _starting.poll() is None:
            connection.health["message"] = \
                f"starting the backend ({time.monotonic() - _starting.started:.0f} s, pid {_starting.pid})"
            return False
        backend = connection.connect(context)
    except BackendError as e:
        for p in _pending:
            scene = bpy.data.scenes.get(p.scene)
            if scene is not None:
                scene.gvf4d.status = str(e)
        connection.health["message"] = str(e)
        _pending.clear()
        _starting = None
        return True
    _starting = None
    connection.refresh(context)
    follow_open_file()
    while _pending:
        p = _pending.pop(0)
        scene = bpy.data.scenes.get(p.scene)
        if scene is None:
            continue
        try:
            take = submit_take(scene, backend, p.footage, p.request, p.take_fields)
            scene.gvf4d.status = f"take {take['index']} queued"
        except BackendError as e:
            scene.gvf4d.status = str(e)
    return True


def _note_stage(followed: Followed, job: dict) -> None:
    """Records when the job's current stage was first seen and how far along it was then."""
    if job.get("stage") != followed.stage:
        followed.stage, followed.stage_seen, followed.stage_fraction = \
            job.get("stage"), time.monotonic(), float(job.get("progress") or 0.0)


def _poll_job(scene, backend: Backend, followed: Followed) -> str | None:
    """One poll of a followed job that is not a take: its on_change gets the job and its progress text. The job
    is dropped once finished, or when it or its scene is gone. Returns the progress text while it runs."""
    job, text = None, None
    try:
        if scene is not None:
            job = backend.job(followed.job)
            _note_stage(followed, job)
            text = progress_text(job, followed)
            followed.on_change(scene, backend, job, text)
    except (BackendError, OSError) as e:        # OSError: writing a download failed
        scene.gvf4d.status = str(e)
        if getattr(e, "status", None) == 404:      # the backend lost the job: not followed after a reopen either
            backend_render.forget(scene, followed.job)
        job = None
    if job is None or job["state"] in FINISHED:
        _followed.pop((followed.scene, followed.job))
        return None
    return text


def follow_step() -> float | None:
    """The timer's body: starts the waiting Generates once the backend answers, polls every followed job once,
    imports finished results. Returns the next delay (None: nothing left to follow)."""
    global _next_health
    context = bpy.context
    if _starting is not None and not _backend_ready(context):
        return POLL_INTERVAL
    prepared = _step_frame_folders()
    if not _followed:
        _status_bar(prepared)
        return POLL_INTERVAL if busy() else None
    try:
        backend = connection.connect(context)
    except BackendError as e:           # followed again when the backend is started or checked
        for scene_name, _ in _followed:
            if scene_name in bpy.data.scenes:
                bpy.data.scenes[scene_name].gvf4d.status = str(e)
        _followed.clear()
        _status_bar(prepared)
        return POLL_INTERVAL if busy() else None
    status = prepared
    for (scene_name, job_id), followed in list(_followed.items()):
        scene = bpy.data.scenes.get(scene_name)
        if followed.on_change is not None:
            status = _poll_job(scene, backend, followed) or status
            continue
        found = takes.find_job(scene, job_id) if scene is not None else None
        if found is None:               # the scene or the take is gone
            _followed.pop((scene_name, job_id))
            continue
        settings = scene.gvf4d
        try:
            job = poll_take(scene, backend, job_id)
        except (BackendError, OSError) as e:        # OSError: writing the download failed
            settings.status = str(e)
            if getattr(e, "status", None) == 404:      # the backend lost the job (another data folder, deleted)
                takes.update_take(scene, found[0], found[1]["index"], state="lost", error=str(e))
            _followed.pop((scene_name, job_id))
            continue
        _note_stage(followed, job)
        key, take = takes.find_job(scene, job_id)
        settings.status = status = f"take {take['index']}: {progress_text(job, followed)}"
        settings.progress = job["progress"]
        if job["state"] in FINISHED:
            _followed.pop((scene_name, job_id))
            if job["state"] == "done":
                status = finish_take(scene, job_id) or status
            elif job["state"] == "failed" and (job.get("error") or "").startswith(OUT_OF_MEMORY):
                settings.status = f"take {take['index']} ran out of GPU memory: see the advice below"
            else:
                settings.status = f"take {take['index']} {job['state']}: {job.get('error') or ''}"
    if _followed and time.monotonic() >= _next_health:
        _next_health = time.monotonic() + HEALTH_INTERVAL
        connection.refresh(context)
    _status_bar(status if _followed or _preparing else None)
    return POLL_INTERVAL if busy() else None


def finish_take(scene, job_id: str) -> str | None:
    """A done, downloaded take: imported now, or, when its import will reference a frame folder that is not
    current (a long shot as splats), the folder written by a thread first and the take imported by the timer
    (`takes.to_import` finds it after a reopen meanwhile). Returns the status while the folder is written."""
    found = takes.find_job(scene, job_id)
    if found is None:
        return None
    key, take = found
    prep = Preparing(scene.name, job_id)
    if not _start_frame_folder(scene, take, prep):
        _import_done(scene, prep)
        return None
    takes.update_take(scene, key, take["index"], importing=True)
    _preparing[(scene.name, job_id)] = prep
    _ensure_timer()
    scene.gvf4d.status = f"take {take['index']}: writing its frame folder"
    return scene.gvf4d.status


def _start_frame_folder(scene, take: dict, prep: Preparing) -> bool:
    """Starts writing the take's frame folder in a thread when its import will reference one that is not
    current. Returns whether it started."""
    if take.get("import_as", scene.gvf4d.import_as) == "MESH":
        return False
    try:
        f = GVF4DFile(paths.to_absolute(take["result"]))
    except (ValueError, OSError):
        return False                    # the import reports it
    if not importer.references_frames(f, "AUTO") or frame_cache.is_current(frame_cache.folder_for(f.path), f):
        return False
    prep.frames = f.num_frames

    def write():
        try:
            frame_cache.write(f, progress=lambda t, _: setattr(prep, "written", t))
        except (ValueError, OSError) as e:
            prep.error = str(e)
    prep.thread = threading.Thread(target=write, name="gvf4d frame folder", daemon=True)
    prep.thread.start()
    return True


def _import_done(scene, prep: Preparing) -> None:
    """Imports a done take (looked up by its job: a save may have moved it) and says so in the panel, or why it
    could not be imported."""
    found = takes.find_job(scene, prep.job)
    if found is None:                   # the take is gone
        return
    key, take = found
    index = take["index"]
    try:
        if prep.error:
            raise OSError(prep.error)
        import_take(scene, key, take)
        reused = ", ".join(take.get("reused_stages") or []) or "no"
        scene.gvf4d.status = f"take {index} imported ({reused} stages reused)"
    except (ValueError, OSError, KeyError) as e:     # GVF4DFileError is a ValueError
        scene.gvf4d.status = f"take {index} done, but its import failed: {e}"
    if take.get("importing"):
        takes.update_take(scene, key, index, importing=False)


def _step_frame_folders() -> str | None:
    """Imports the takes whose frame folder is written; the progress of those still being written."""
    status = None
    for job_key, prep in list(_preparing.items()):
        scene = bpy.data.scenes.get(prep.scene)
        found = takes.find_job(scene, prep.job) if scene is not None else None
        if found is None:
            _preparing.pop(job_key)
        elif prep.thread.is_alive():
            status = scene.gvf4d.status = \
                f"take {found[1]['index']}: writing its frame folder, {prep.written}/{prep.frames} frames"
            scene.gvf4d.progress = prep.written / max(prep.frames, 1)
        else:
            _preparing.pop(job_key)
            _import_done(scene, prep)
    return status


def _status_bar(text: str | None) -> None:
    """The job's state in the status bar while a take runs (nothing to show in background mode)."""
    workspace = getattr(bpy.context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(f"GVF4D: {text}" if text else None)
