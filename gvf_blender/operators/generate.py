"""Generating takes: send the shot to the backend (starting one when none runs), rerun a take (on its edited splat,
with another seed, engine or refinement), cancel its running take, show one take of its history, act on an
out-of-memory failure's advice."""
import bpy

from .. import connection, jobs, rerun, takes
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


class GVF4D_OT_rerun_take(bpy.types.Operator):
    """Run a take's motion again as a new take, on its splat as edited here or with another seed, engine or
    refinement; the take's footage and other settings are kept"""
    bl_idname = "gvf4d.rerun_take"
    bl_label = "Rerun take"
    # SKIP_SAVE: every rerun starts from its own take's values, not the last dialog's
    index: bpy.props.IntProperty(name="Take", default=-1, options={"HIDDEN", "SKIP_SAVE"},
                                 description="The shot's take to rerun (-1: the take of the active object)")
    edited_splat: bpy.props.BoolProperty(
        name="Edited splat", options={"SKIP_SAVE"},
        description="Send the splat as edited on the take's object (deleted, moved, rescaled or recoloured "
        "Gaussians), used exactly. Moves and deletions show at once; scale, colour and opacity edits show after the "
        "rerun where the result animates that track. Default: on when the object was edited")
    seed: bpy.props.IntProperty(name="Seed", min=0, options={"SKIP_SAVE"},
                                description="GVF engine: the sampling seed (default: the take's)")
    engine: bpy.props.EnumProperty(name="Engine", items=[("fit", "Fit (no weights)", ""),
                                                         ("gvf", "GVF diffusion", "")],
                                   options={"SKIP_SAVE"}, description="Default: the take's")
    refine: bpy.props.IntProperty(name="Refinement", min=0, max=1000, options={"SKIP_SAVE"},
                                  description="GVF engine: fit steps per frame refining its result against the "
                                  "footage (0: off; default: the take's)")

    def _take(self, context) -> tuple[str, int]:
        """(shot key, take index): take `index` of the panel's shot, else the active object's take."""
        if self.index >= 0:
            shot = takes.key_of(context.scene, context.scene.gvf4d.footage_path(context))
            if shot is None:
                raise ValueError("this shot has no takes yet")
            return shot, self.index
        obj = context.active_object
        if obj is None or "gvf4d_take" not in obj:
            raise ValueError("select an object imported from a take, or pick the take in the panel")
        return obj["gvf4d_shot"], int(obj["gvf4d_take"])

    def _fill_defaults(self, context, shot: str, index: int) -> None:
        """Options left unset take the take's values; the edited splat when its object was edited."""
        settings = takes.takes(context.scene, shot)[index]["settings"]
        defaults = {"seed": settings.get("seed", 0), "engine": settings.get("engine", "fit"),
                    "refine": settings.get("refine", 0)}
        for name, value in defaults.items():
            if not self.properties.is_property_set(name):
                setattr(self, name, value)
        if not self.properties.is_property_set("edited_splat"):
            self.edited_splat = rerun.default_edited(context.scene, shot, index)

    def invoke(self, context, event):
        try:
            self._fill_defaults(context, *self._take(context))
        except (ValueError, IndexError, OSError) as e:      # GVF4DFileError is a ValueError
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        s = context.scene.gvf4d
        try:
            shot, index = self._take(context)
            self._fill_defaults(context, shot, index)
            changes = {"seed": self.seed, "engine": self.engine, "refine": self.refine}
            if not takes.takes(context.scene, shot)[index]["settings"].get("weights") and s.weights:
                changes["weights"] = bpy.path.abspath(s.weights)    # a fit take rerun with the gvf engine
            footage, request, take_fields = rerun.rerun_request(context.scene, shot, index, self.edited_splat,
                                                                **changes)
            s.status = jobs.generate(context, footage, request, take_fields)
        except (BackendError, ValueError, IndexError, OSError) as e:      # GVF4DFileError is a ValueError
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
            s.frames = s.fewer_frames(context)
        elif self.action == "GAUSSIANS":
            s.mesh_samples = max(s.mesh_samples // 2, 1_000)
        else:
            s.precision = "fp16"
        s.status = "settings changed: Generate again"
        return {"FINISHED"}


CLASSES = (GVF4D_OT_generate, GVF4D_OT_rerun_take, GVF4D_OT_cancel, GVF4D_OT_activate_take, GVF4D_OT_reduce_memory)
