"""Generating takes: send the shot to the backend (starting one when none runs), cancel its running take, show one
take of its history, act on an out-of-memory failure's advice."""
import bpy

from .. import connection, jobs, takes
from ..backend import BackendError


class GVF4D_OT_generate(bpy.types.Operator):
    """Send this shot to the GVF4D backend (started first when none runs and the preferences say how); the
    result is imported as a new take when it is ready"""
    bl_idname = "gvf4d.generate"
    bl_label = "Generate"

    def execute(self, context):
        s = context.scene.gvf4d
        try:
            footage = s.footage_path(context)
            if s.source == "CLIP":   # frame 1 of the result lands on the clip's start frame
                s.frame_start = s.movie_clip(context).frame_start + s.start
            s.status = jobs.generate(context, footage, s.request(context), s.take_fields())
        except (BackendError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        s.progress = 0.0
        return {"FINISHED"}


class GVF4D_OT_cancel(bpy.types.Operator):
    """Cancel the shot's running take"""
    bl_idname = "gvf4d.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        try:
            job = jobs.followed_job(context.scene, context.scene.gvf4d.footage_path(context))
        except ValueError:
            return {"CANCELLED"}
        if job is None:
            return {"CANCELLED"}
        try:
            connection.connect(context).cancel(job)
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
            footage = context.scene.gvf4d.footage_path(context)
            takes.set_active(context.scene, footage, self.index)
        except (ValueError, IndexError, KeyError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        shot = takes.key_of(context.scene, footage)
        for obj in context.scene.objects:
            if obj.get("gvf4d_shot") == shot:
                hidden = obj.get("gvf4d_take") != self.index
                obj.hide_viewport = obj.hide_render = hidden
        return {"FINISHED"}


class GVF4D_OT_reduce_memory(bpy.types.Operator):
    """Change the shot's settings so the next take needs less GPU memory"""
    bl_idname = "gvf4d.reduce_memory"
    bl_label = "Use less GPU memory"
    action: bpy.props.EnumProperty(items=[
        ("FRAMES", "Half the frames", "Generate half as many frames"),
        ("GAUSSIANS", "Half the Gaussians", "Sample half as many Gaussians on the canonical mesh"),
        ("PRECISION", "Half precision", "Run the GVF engine in fp16 instead of fp32")])

    def execute(self, context):
        s = context.scene.gvf4d
        if self.action == "FRAMES":
            s.frames = max(1, s.frames // 2)
        elif self.action == "GAUSSIANS":
            s.mesh_samples = max(s.mesh_samples // 2, 1_000)
        else:
            s.precision = "fp16"
        s.status = "settings changed: Generate again"
        return {"FINISHED"}


CLASSES = (GVF4D_OT_generate, GVF4D_OT_cancel, GVF4D_OT_activate_take, GVF4D_OT_reduce_memory)
