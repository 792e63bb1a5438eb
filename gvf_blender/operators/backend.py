"""The backend from Blender: start and stop a local one, check it (versions, GPU, memory), free its GPU memory,
open its log, copy a diagnostics report."""
import bpy

from .. import connection, diagnostics, jobs, lifecycle, lockfile
from ..backend import BackendError


class GVF4D_OT_start_backend(bpy.types.Operator):
    """Start a local backend (`gvf4d serve`) with the Backend Python set in the preferences; a backend already
    running is used"""
    bl_idname = "gvf4d.start_backend"
    bl_label = "Start backend"

    def execute(self, context):
        if lockfile.live_backend(connection.data_dir(context)) is not None:
            return bpy.ops.gvf4d.check_backend()
        try:
            weights = context.scene.gvf4d.weights
            process = connection.start(context, bpy.path.abspath(weights) if weights else "")
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        jobs.await_backend(process)
        self.report({"INFO"}, f"starting the GVF4D backend (pid {process.pid}, log {process.log})")
        return {"FINISHED"}


class GVF4D_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend (a running job is recorded interrupted)"""
    bl_idname = "gvf4d.stop_backend"
    bl_label = "Stop backend"

    def execute(self, context):
        try:
            pid = lifecycle.stop(connection.data_dir(context))
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        connection.health.update(answer=None, message=f"stopped the backend (pid {pid})")
        return {"FINISHED"}


def describe(health: dict) -> str:
    """One line: the backend's version, its device and free GPU memory, the loaded networks."""
    devices = []
    for w in health.get("workers") or []:
        d = w.get("device") or {}
        memory = f", {d['vram_free'] / 2**30:.1f} of {d['vram_total'] / 2**30:.1f} GiB free" \
            if d.get("vram_total") else ""
        devices.append(f"{d.get('name') or d.get('type', '?')}{memory}")
    models = sorted({m["kind"] for w in health.get("workers") or [] for m in w.get("models") or []})
    return (f"gvf4d {health.get('version', '?')} ({health.get('status', '?')}) on {'; '.join(devices) or 'no worker'}"
            f"; models loaded: {', '.join(models) or 'none'}")


class GVF4D_OT_check_backend(bpy.types.Operator):
    """Ask the backend for its versions, GPU, free memory and loaded models"""
    bl_idname = "gvf4d.check_backend"
    bl_label = "Check backend"

    def execute(self, context):
        answer = connection.refresh(context)
        if answer is None:
            self.report({"ERROR"}, connection.health["message"])
            return {"CANCELLED"}
        jobs.follow_open_file()
        w = answer.get("weights")
        weights = ("; weights: " + ", ".join(f"{k} {v}" for k, v in w.items() if k != "folder")) if w else \
            "; no weights folder configured (fit engine only)"
        self.report({"INFO"}, f"{describe(answer)}, torch {answer.get('torch')}{weights}")
        return {"FINISHED"}


class GVF4D_OT_free_gpu_memory(bpy.types.Operator):
    """Unload the networks the backend keeps loaded between jobs (the next job loads them again)"""
    bl_idname = "gvf4d.free_gpu_memory"
    bl_label = "Free GPU memory"

    def execute(self, context):
        try:
            connection.connect(context).unload_models()
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        answer = connection.refresh(context)
        self.report({"INFO"}, describe(answer) if answer else "models unloaded")
        return {"FINISHED"}


class GVF4D_OT_open_backend_log(bpy.types.Operator):
    """Open the local backend's log file (DATA/backend.log)"""
    bl_idname = "gvf4d.open_backend_log"
    bl_label = "Open backend log"

    def execute(self, context):
        log = connection.data_dir(context) / lockfile.LOG_NAME
        if not log.is_file():
            self.report({"ERROR"}, f"{log} does not exist yet (the backend has not run on this data folder)")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(log))
        return {"FINISHED"}


class GVF4D_OT_copy_diagnostics(bpy.types.Operator):
    """Copy Blender's, the add-on's and the backend's versions (torch, CUDA, GPU) to the clipboard, for a bug
    report"""
    bl_idname = "gvf4d.copy_diagnostics"
    bl_label = "Copy diagnostics"

    def execute(self, context):
        context.window_manager.clipboard = diagnostics.report(context)
        self.report({"INFO"}, "GVF4D diagnostics copied to the clipboard")
        return {"FINISHED"}


CLASSES = (GVF4D_OT_start_backend, GVF4D_OT_stop_backend, GVF4D_OT_check_backend, GVF4D_OT_free_gpu_memory,
           GVF4D_OT_open_backend_log, GVF4D_OT_copy_diagnostics)
