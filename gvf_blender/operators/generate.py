"""Generating takes: send the shot to the backend, cancel its running take, show one take of its history."""
import bpy

from .. import jobs, takes
from ..backend import BackendError
from ..preferences import backend_from_preferences


class GVF4D_OT_generate(bpy.types.Operator):
    """Send this shot to the GVF4D backend; the result is imported as a new take when it is ready"""
    bl_idname = "gvf4d.generate"
    bl_label = "Generate"

    def execute(self, context):
        s = context.scene.gvf4d
        try:
            shot = s.footage_path(context)
            if s.source == "CLIP":   # frame 1 of the result lands on the clip's start frame
                s.frame_start = s.movie_clip(context).frame_start + s.start
            take = jobs.submit_take(context.scene, backend_from_preferences(context), shot, s.request(context))
        except (BackendError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        jobs.follow(shot, take["index"])
        s.status, s.progress = f"take {take['index']} queued", 0.0
        return {"FINISHED"}


class GVF4D_OT_cancel(bpy.types.Operator):
    """Cancel the shot's running take"""
    bl_idname = "gvf4d.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        try:
            shot = context.scene.gvf4d.footage_path(context)
        except ValueError:
            return {"CANCELLED"}
        index = jobs.followed_take(shot)
        if index is None:
            return {"CANCELLED"}
        try:
            backend_from_preferences(context).cancel(takes.takes(context.scene, shot)[index]["job"])
        except BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class GVF4D_OT_activate_take(bpy.types.Operator):
    """Make this take the shot's active one: its object is shown, the other takes' objects hidden"""
    bl_idname = "gvf4d.activate_take"
    bl_label = "Activate take"
    index: bpy.props.IntProperty()

    def execute(self, context):
        try:
            shot = context.scene.gvf4d.footage_path(context)
            takes.set_active(context.scene, shot, self.index)
        except (ValueError, IndexError, KeyError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        for obj in context.scene.objects:
            if obj.get("gvf4d_shot") == shot:
                hidden = obj.get("gvf4d_take") != self.index
                obj.hide_viewport = obj.hide_render = hidden
        return {"FINISHED"}
