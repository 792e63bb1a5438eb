"""The GVF4D sidebar panel (3D View and Movie Clip editor): the shot's settings, Generate, its takes, import/export."""
import bpy

from .. import exporters, takes
from ..operators.generate import GVF4D_OT_activate_take, GVF4D_OT_cancel, GVF4D_OT_generate
from ..operators.import_export import GVF4D_OT_export, GVF4D_OT_import


class ShotPanel:
    """The panel's body, shared by the editors it appears in (a mixin: bl_space_type comes from the subclass)."""
    bl_label = "GVF4D"
    bl_region_type = "UI"
    bl_category = "GVF4D"

    def draw(self, context):
        s = context.scene.gvf4d
        col = self.layout.column()
        col.prop(s, "source")
        names = ("start", "stride", "frames", "canonical_source")
        for name in (names if s.source == "CLIP" else ("footage",) + names):
            col.prop(s, name)
        if s.canonical_source in ("splat", "mesh"):
            col.prop(s, "canonical")
        col.prop(s, "engine")
        if s.engine == "gvf" or s.canonical_source == "trellis":
            col.prop(s, "weights")
            col.prop(s, "seed")
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
        col.separator()
        col.operator(GVF4D_OT_import.bl_idname, icon="IMPORT")
        obj = context.active_object
        if obj is not None and "gvf4d_frames" in obj:
            start, end = exporters.frame_range(obj)
            col.label(text=f"{obj.name}: frames {start}-{end}")
            col.operator(GVF4D_OT_export.bl_idname, icon="EXPORT")


class GVF4D_PT_panel(ShotPanel, bpy.types.Panel):
    bl_idname = "GVF4D_PT_panel"
    bl_space_type = "VIEW_3D"


class GVF4D_PT_clip_panel(ShotPanel, bpy.types.Panel):
    bl_idname = "GVF4D_PT_clip_panel"
    bl_space_type = "CLIP_EDITOR"
