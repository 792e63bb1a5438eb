"""The scene around an imported result, each only on the artist's request: the settings the splat look needs,
the footage camera, the scene's frame range, fps and resolution from the result, and the display."""
import bpy

from .. import footage_camera, importer, scene_setup
from ..exporters.source import open_result
from ..result_file import GVF4DFileError


def _active_result(context):
    obj = context.active_object
    return obj if obj is not None and "gvf4d_frames" in obj else None


class GVF4D_OT_apply_look_settings(bpy.types.Operator):
    """Set what the splat look needs: the Standard view transform and enough Cycles transparent bounces"""
    bl_idname = "gvf4d.apply_look_settings"
    bl_label = "Apply Splat Look Settings"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        changed = scene_setup.apply_look_settings(context.scene)
        self.report({"INFO"}, f"Changed: {', '.join(changed)}" if changed else "Nothing to change")
        return {"FINISHED"}


class _ResultOperator:
    """An operator on the active imported result and the metadata of its file; a file problem is reported."""
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _active_result(context) is not None

    def execute(self, context):
        obj = _active_result(context)
        try:
            self.apply(context, obj, open_result(obj).metadata,
                       int(obj.get("gvf4d_frame_start", context.scene.frame_start)))
        except (GVF4DFileError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class GVF4D_OT_add_footage_camera(_ResultOperator, bpy.types.Operator):
    """Create the camera that sees the active result as the footage does, the plate as its background"""
    bl_idname = "gvf4d.add_footage_camera"
    bl_label = "Add Footage Camera"

    def apply(self, context, obj, meta, frame_start):
        context.scene.camera = footage_camera.create_footage_camera(
            meta, placement=obj.get("gvf4d_placement", "AUTO"), frame_start=frame_start)


class GVF4D_OT_match_scene(_ResultOperator, bpy.types.Operator):
    """Set the scene's frame range, fps and resolution from the active result"""
    bl_idname = "gvf4d.match_scene"
    bl_label = "Match Scene to Footage"

    def apply(self, context, obj, meta, frame_start):
        footage_camera.match_scene(context.scene, meta, frame_start)


class GVF4D_OT_set_display(bpy.types.Operator):
    """Show the active result as Gaussian splats or as coloured points"""
    bl_idname = "gvf4d.set_display"
    bl_label = "Set Display"
    bl_options = {"REGISTER", "UNDO"}
    display: bpy.props.EnumProperty(items=[("splat", "Splats", ""), ("points", "Points", "")])

    @classmethod
    def poll(cls, context):
        obj = _active_result(context)
        return obj is not None and importer.DISPLAY_MODIFIER in obj.modifiers

    def execute(self, context):
        importer.set_display(_active_result(context), self.display)
        return {"FINISHED"}


CLASSES = (GVF4D_OT_apply_look_settings, GVF4D_OT_add_footage_camera, GVF4D_OT_match_scene,
           GVF4D_OT_set_display)


def draw_look(layout, scene) -> None:
    """The settings the splat look needs that the scene does not meet, and the one click that sets them."""
    unmet = scene_setup.unmet_requirements(scene)
    if not unmet:
        return
    box = layout.box()
    box.label(text="The splat look needs:", icon="INFO")
    for r in unmet:
        box.label(text=f"{r.label}: {r.current} -> {r.needed}")
    box.operator(GVF4D_OT_apply_look_settings.bl_idname, icon="CHECKMARK")


def draw_result_tools(layout, obj) -> None:
    """Camera, scene and display for the active imported result."""
    row = layout.row(align=True)
    row.operator(GVF4D_OT_add_footage_camera.bl_idname, icon="CAMERA_DATA")
    row.operator(GVF4D_OT_match_scene.bl_idname, text="Match Scene", icon="SCENE_DATA")
    if importer.DISPLAY_MODIFIER in obj.modifiers:
        row = layout.row(align=True)
        row.operator(GVF4D_OT_set_display.bl_idname, text="Splats").display = "splat"
        row.operator(GVF4D_OT_set_display.bl_idname, text="Points").display = "points"
