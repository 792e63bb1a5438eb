"""The GVF4D sidebar panel (3D View and Movie Clip editor): the backend (state, GPU, memory, start/stop), the
shot's settings, Generate, its takes with an out-of-memory failure's advice, import/export."""
import bpy

from .. import connection, exporters, importer, jobs, takes
from ..operators import backend as backend_ops
from ..operators.generate import (GVF4D_OT_activate_take, GVF4D_OT_cancel, GVF4D_OT_generate,
                                  GVF4D_OT_reduce_memory, GVF4D_OT_rerun_take)
from ..operators.import_export import GVF4D_OT_export, GVF4D_OT_import
from ..operators.render import GVF4D_OT_render_with_backend
from ..operators.scene import draw_look, draw_result_tools


def draw_backend(layout) -> None:
    """The backend's last known state (drawn from the last health answer: drawing never waits on the network)
    and its operators."""
    box = layout.box()
    answer, message = connection.health["answer"], connection.health["message"]
    if answer:
        text = backend_ops.describe(answer)
        for part in text.split("; "):
            box.label(text=part, icon="CHECKMARK" if answer.get("status") == "ok" else "ERROR")
    if message or not answer:
        box.label(text=message or "backend not checked yet", icon="INFO")
    row = box.row(align=True)
    row.operator(backend_ops.GVF4D_OT_start_backend.bl_idname, text="Start", icon="PLAY")
    row.operator(backend_ops.GVF4D_OT_stop_backend.bl_idname, text="Stop", icon="PAUSE")
    row.operator(backend_ops.GVF4D_OT_check_backend.bl_idname, text="", icon="FILE_REFRESH")
    row = box.row(align=True)
    row.operator(backend_ops.GVF4D_OT_free_gpu_memory.bl_idname, icon="TRASH")
    row.operator(backend_ops.GVF4D_OT_open_backend_log.bl_idname, text="Log", icon="TEXT")
    row.operator(backend_ops.GVF4D_OT_copy_diagnostics.bl_idname, text="", icon="COPYDOWN")


def draw_memory_advice(layout, settings) -> None:
    """What the artist can change after a take ran out of GPU memory, each one click."""
    box = layout.box()
    box.label(text="The last take ran out of GPU memory. Try:", icon="ERROR")
    box.operator(GVF4D_OT_reduce_memory.bl_idname, text=f"Fewer frames ({settings.frames or 'all'} -> "
                 f"{settings.fewer_frames(bpy.context)})").action = "FRAMES"
    if settings.canonical_source in ("mesh", "object"):
        box.operator(GVF4D_OT_reduce_memory.bl_idname, text=f"Fewer Gaussians ({settings.mesh_samples:,} -> "
                     f"{max(settings.mesh_samples // 2, 1000):,})").action = "GAUSSIANS"
    if settings.engine == "gvf" and settings.precision == "fp32":
        box.operator(GVF4D_OT_reduce_memory.bl_idname, text="Half precision (fp16)").action = "PRECISION"
    box.operator(backend_ops.GVF4D_OT_free_gpu_memory.bl_idname, text="Free the backend's loaded models")


def draw_frame_data(layout, obj) -> None:
    """Where the result's frames are: in the .blend, or in a frame folder (flagged when it is missing, as after
    copying the .blend alone to another machine)."""
    try:
        folder = importer.frame_folder(obj)
    except (KeyError, ValueError):       # the group lost its input; a relative folder of an unsaved .blend
        folder = None
    if obj.get("gvf4d_frame_data") != "REFERENCED":
        layout.label(text="frames embedded in the .blend", icon="PACKAGE")
    elif folder is not None and folder.is_dir():
        layout.label(text=f"frames read from {folder.name}/ beside the result", icon="FILE_FOLDER")
    else:
        layout.label(text=f"frame folder missing: {folder or '?'} (import the result again)", icon="ERROR")


class ShotPanel:
    """The panel's body, shared by the editors it appears in (a mixin: bl_space_type comes from the subclass)."""
    bl_label = "GVF4D"
    bl_region_type = "UI"
    bl_category = "GVF4D"

    def draw(self, context):
        s = context.scene.gvf4d
        col = self.layout.column()
        draw_backend(col)
        col.prop(s, "source")
        names = ("start", "stride", "frames", "canonical_source")
        for name in (names if s.source == "CLIP" else ("footage",) + names):
            col.prop(s, name)
        if s.canonical_source in ("splat", "mesh"):
            col.prop(s, "canonical")
        if s.canonical_source in ("mesh", "object"):
            col.prop(s, "mesh_samples")
        col.prop(s, "engine")
        if s.engine == "gvf" or s.canonical_source == "trellis":
            col.prop(s, "weights")
            col.prop(s, "seed")
            col.prop(s, "precision")
        else:
            col.prop(s, "fit_iterations")
        col.prop(s, "frame_start")
        col.prop(s, "import_as")
        col.prop(s, "extract_mesh")
        row = col.row()
        row.operator(GVF4D_OT_generate.bl_idname, icon="PLAY")
        row.operator(GVF4D_OT_cancel.bl_idname, icon="CANCEL")
        if s.status:
            col.label(text=s.status)
            col.prop(s, "progress", text="")
        try:
            shot = s.footage_path(context)
            history, current = takes.takes(context.scene, shot), takes.active(context.scene, shot)
        except ValueError:
            history, current = [], None
        if history and history[-1]["state"] == "failed" and \
                (history[-1].get("error") or "").startswith(jobs.OUT_OF_MEMORY):
            draw_memory_advice(col, s)
        if history:
            box = col.box()
            box.label(text="Takes")
            for take in history:
                row = box.row()
                mark = "\u25cf " if current and current["index"] == take["index"] else ""
                extra = f"seed {take['seed']}" if take["settings"].get("engine") == "gvf" else \
                    f"{take['settings'].get('fit_iterations')} steps"
                row.label(text=f"{mark}{take['index']}: {take['state']}, {extra}, {take['time'][11:16]}")
                op = row.operator(GVF4D_OT_activate_take.bl_idname, text="", icon="HIDE_OFF")
                op.index = take["index"]
                if take.get("result"):
                    row.operator(GVF4D_OT_rerun_take.bl_idname, text="", icon="FILE_REFRESH").index = take["index"]
        col.separator()
        col.operator(GVF4D_OT_import.bl_idname, icon="IMPORT")
        draw_look(col, context.scene)
        obj = context.active_object
        if obj is not None and "gvf4d_frames" in obj:
            start, end = exporters.frame_range(obj)
            col.label(text=f"{obj.name}: frames {start}-{end}")
            draw_frame_data(col, obj)
            draw_result_tools(col, obj)
            col.operator(GVF4D_OT_export.bl_idname, icon="EXPORT")
            col.operator(GVF4D_OT_render_with_backend.bl_idname, icon="RENDER_ANIMATION")


class GVF4D_PT_panel(ShotPanel, bpy.types.Panel):
    bl_idname = "GVF4D_PT_panel"
    bl_space_type = "VIEW_3D"


class GVF4D_PT_clip_panel(ShotPanel, bpy.types.Panel):
    bl_idname = "GVF4D_PT_clip_panel"
    bl_space_type = "CLIP_EDITOR"
