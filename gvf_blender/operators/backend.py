"""The backend from Blender: start a local one (`gvf4d serve`), ask one for its versions and GPU."""
import bpy

from ..backend import BackendError, start_backend
from ..preferences import addon_preferences, backend_from_preferences


class GVF4D_OT_start_backend(bpy.types.Operator):
    """Start a local backend (`gvf4d serve`) with the interpreter set in the preferences"""
    bl_idname = "gvf4d.start_backend"
    bl_label = "Start local backend"

    def execute(self, context):
        prefs = addon_preferences(context)
        if prefs is None or not prefs.python:
            self.report({"ERROR"}, "set the backend's Python interpreter in the GVF4D preferences first")
            return {"CANCELLED"}
        data_dir = bpy.path.abspath(prefs.data_dir) if prefs.data_dir else ""
        try:
            h = start_backend(bpy.path.abspath(prefs.python), data_dir).health()
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"GVF4D backend {h['version']} running (GPU: {h['gpu'] or 'none'})")
        return {"FINISHED"}


class GVF4D_OT_check_backend(bpy.types.Operator):
    """Ask the backend for its versions and GPU"""
    bl_idname = "gvf4d.check_backend"
    bl_label = "Check backend"

    def execute(self, context):
        try:
            h = backend_from_preferences(context).health()
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        w = h.get("weights")
        weights = ("; weights: " + ", ".join(f"{k} {v}" for k, v in w.items() if k != "folder")) if w else \
            "; no weights folder configured (fit engine only)"
        self.report({"INFO"}, f"GVF4D {h['version']}, torch {h['torch']}, GPU: {h['gpu'] or 'none (CPU)'}{weights}")
        return {"FINISHED"}
