"""A generation job followed from Blender: submit, poll (from a timer, never blocking), download, import.

The takes being followed are kept per shot (footage path -> take index) while the add-on is registered;
`follow_step`, a `bpy.app.timers` function, polls them and imports each finished result.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import bpy

from . import importer, takes
from .backend import Backend, BackendError
from .preferences import backend_from_preferences

FINISHED = ("done", "failed", "cancelled", "interrupted")
POLL_INTERVAL = 0.5   # seconds between the timer's polls

_followed: dict[str, int] = {}   # shot -> index of the take the timer follows


def blend_relative(path: Path) -> str:
    """'//...' relative to the saved .blend when the file is below its folder, else absolute."""
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(str(path))
        except ValueError:   # another drive
            pass
    return str(path)


def submit_take(scene, backend: Backend, shot: str, request: dict) -> dict:
    """Sends the job and records a take for it. request: the backend's job fields (footage, canonical_path, ...)."""
    job = backend.submit(request)
    return takes.add_take(scene, shot, request, job["id"])


def poll_take(scene, backend: Backend, shot: str, index: int, results_dir: Path) -> dict:
    """One non-blocking step: asks the backend for the job's state, records it, and when it is done downloads
    the result next to the .blend (or results_dir). Returns the backend's job."""
    take = takes.takes(scene, shot)[index]
    job = backend.job(take["job"])
    fields = {"state": job["state"], "stage": job["stage"], "progress": job["progress"]}
    if job["state"] == "done" and not take.get("result"):
        dest = Path(results_dir) / f"take_{index:03d}_{take['job']}.gvf4d"
        backend.download(job["id"], job["result"], dest)
        fields["result"] = blend_relative(dest)
        fields["reused_stages"] = job.get("reused_stages", [])
    if job["state"] == "failed":
        fields["error"] = job.get("error") or "failed"
    takes.update_take(scene, shot, index, **fields)
    return job


def results_dir() -> Path:
    """Where downloaded results go: //gvf4d_results next to the saved .blend, else the temporary folder."""
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//gvf4d_results"))
    return Path(tempfile.gettempdir()) / "gvf4d_results"


def follow(shot: str, index: int) -> None:
    """Follows the shot's take from the timer until its job finishes."""
    _followed[shot] = index
    if not bpy.app.timers.is_registered(follow_step):
        bpy.app.timers.register(follow_step, first_interval=POLL_INTERVAL)


def followed_take(shot: str) -> int | None:
    """The index of the shot's take being followed, None when none runs."""
    return _followed.get(shot)


def stop_following() -> None:
    if bpy.app.timers.is_registered(follow_step):
        bpy.app.timers.unregister(follow_step)
    _followed.clear()


def follow_step() -> float | None:
    """The timer's body: one poll of every followed take; imports finished results. Returns the next delay."""
    scene = bpy.context.scene
    settings = scene.gvf4d
    for shot, index in list(_followed.items()):
        try:
            job = poll_take(scene, backend_from_preferences(bpy.context), shot, index, results_dir())
        except BackendError as e:
            settings.status = str(e)
            _followed.pop(shot)
            continue
        settings.status = f"{job['state']}: {job['stage']} {100 * job['progress']:.0f}%"
        settings.progress = job["progress"]
        if job["state"] in FINISHED:
            _followed.pop(shot)
            take = takes.takes(scene, shot)[index]
            if job["state"] == "done":
                importer_fn = importer.import_mesh if settings.import_as == "MESH" else importer.import_splats
                kwargs = {} if settings.import_as == "MESH" else {"display": settings.display}
                obj = importer_fn(bpy.path.abspath(take["result"]), name=f"{Path(shot).stem}_take{index}",
                                  frame_start=settings.frame_start, **kwargs)
                obj["gvf4d_shot"], obj["gvf4d_take"] = shot, index
                takes.set_active(scene, shot, index)
                settings.status = f"take {index} imported ({', '.join(job.get('reused_stages') or []) or 'no'} stages reused)"
            else:
                settings.status = f"take {index} {job['state']}: {job.get('error') or ''}"
    _status_bar(settings.status if _followed else None)
    return POLL_INTERVAL if _followed else None


def _status_bar(text: str | None) -> None:
    """The job's state in the status bar while a take runs (nothing to show in background mode)."""
    workspace = getattr(bpy.context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(f"GVF4D: {text}" if text else None)
