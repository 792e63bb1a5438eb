"""A generation job followed from Blender: submit, poll (from a timer, never blocking), download, import."""
from __future__ import annotations

from pathlib import Path

from . import takes
from .backend import Backend

FINISHED = ("done", "failed", "cancelled", "interrupted")


def blend_relative(path: Path) -> str:
    """'//...' relative to the saved .blend when the file is below its folder, else absolute."""
    import bpy
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
