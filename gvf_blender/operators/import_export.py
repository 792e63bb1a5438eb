"""Importing a .gvf4d result (File > Import, the panel) and exporting an imported one (3DGS PLY sequence, glTF
Gaussian splat, glTF morph targets, Alembic)."""
import os
import textwrap

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .. import exporters, footage_camera, importer, scene_setup
from ..exporters.source import open_result
from ..result_file import GVF4DFileError


class GVF4D_OT_import(bpy.types.Operator, ImportHelper):
    """Import a GVF4D result (.gvf4d) as keyframed splats or as a deformed mesh"""
    bl_idname = "gvf4d.import_result"
    bl_label = "Import GVF4D Result"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".gvf4d"
    filter_glob: bpy.props.StringProperty(default="*.gvf4d", options={"HIDDEN"})
    mode: bpy.props.EnumProperty(name="As", items=[("SPLATS", "Keyframed splats", ""),
                                                   ("MESH", "Deformed mesh", "")], default="SPLATS")
    display: bpy.props.EnumProperty(name="Display", items=[
        ("splat", "Splats", "Gaussian splats (camera-facing, 3DGS falloff)"),
        ("points", "Points", "Coloured points, cheap for heavy scenes")])
    frame_start: bpy.props.IntProperty(name="Start frame", default=1,
                                       description="The scene frame the result's first frame lands on")
    placement: bpy.props.EnumProperty(name="Placement", default="AUTO", items=[
        ("AUTO", "Auto", "Where the artist's mesh or splat was when the canonical came from one, else the origin"),
        ("ASSET", "Asset", "Undo the result's normalisation: where the artist's mesh or splat was"),
        ("ORIGIN", "Origin", "The result's own space, centred at the origin")])
    frame_data: bpy.props.EnumProperty(name="Frame data", default="AUTO", items=[
        ("AUTO", "Auto", "Embedded up to 512 MiB of per-frame data (e.g. 200k splats × 48 frames), referenced above"),
        ("EMBEDDED", "Embedded", "Every frame as point attributes saved in the .blend: self-contained, large"),
        ("REFERENCED", "Referenced", "Every frame in a folder beside the result (NAME.frames/, one PLY per frame), "
                                     "read at the scene frame: the .blend stays small; keep the folder with it. "
                                     "Blender keeps read frames up to Preferences > System > Memory Cache Limit")])
    footage_camera: bpy.props.BoolProperty(
        name="Footage camera", default=False,
        description="Also create the camera that sees the plate (the footage as its background) and make it active")
    match_scene: bpy.props.BoolProperty(
        name="Match scene", default=False,
        description="Set the scene's frame range, fps and resolution from the result")
    look_settings: bpy.props.BoolProperty(
        name="Splat look settings", default=False,
        description="Set what the splat look needs: Standard view transform, Cycles transparent bounces")

    def invoke(self, context, event):
        self.frame_start = context.scene.frame_start
        return ImportHelper.invoke(self, context, event)

    @staticmethod
    def _progress(context):
        """Writing a long shot's frame folder takes a while: the cursor shows how far it is."""
        wm = context.window_manager
        wm.progress_begin(0, 100)
        return lambda t, total: wm.progress_update(100 * t // total)

    def execute(self, context):
        try:
            if self.mode == "SPLATS":
                obj = importer.import_splats(self.filepath, frame_start=self.frame_start, display=self.display,
                                             placement=self.placement, frame_data=self.frame_data,
                                             progress=self._progress(context))
            else:
                obj = importer.import_mesh(self.filepath, frame_start=self.frame_start, placement=self.placement)
        except (GVF4DFileError, ValueError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        finally:
            context.window_manager.progress_end()
        context.view_layer.objects.active = obj
        scene, meta = context.scene, open_result(obj).metadata
        if self.footage_camera:
            try:
                scene.camera = footage_camera.create_footage_camera(meta, placement=self.placement,
                                                                    frame_start=self.frame_start)
            except ValueError as e:
                self.report({"WARNING"}, f"no footage camera: {e}")
        if self.match_scene:
            footage_camera.match_scene(scene, meta, self.frame_start)
        if self.look_settings:
            scene_setup.apply_look_settings(scene)
        self.report({"INFO"}, f"Imported {obj.name}: {obj['gvf4d_frames']} frames from frame {self.frame_start}")
        return {"FINISHED"}


FORMAT_EXTENSIONS = {key: export_format.extension for key, export_format in exporters.FORMATS.items()}


def export_path(filepath: str, file_format: str) -> str:
    """filepath with the extension of the chosen format (any other format's extension replaced)."""
    stem, ext = os.path.splitext(filepath)
    if ext.lower() not in FORMAT_EXTENSIONS.values():
        stem = filepath
    return stem + FORMAT_EXTENSIONS[file_format]


def match_filter_to_format(self, context):
    """The export dialog's file filter shows the chosen format's files only."""
    self.filter_glob = "*" + FORMAT_EXTENSIONS[self.format]


class GVF4D_OT_export(bpy.types.Operator, ExportHelper):
    """Export the active GVF4D object over its frame range, read from its result file: 3DGS PLY sequence, glTF
    Gaussian splat, glTF morph targets or Alembic"""
    bl_idname = "gvf4d.export_result"
    bl_label = "Export GVF4D Animation"
    filename_ext = ".glb"       # the default format's; the file name follows the chosen format (check)
    filter_glob: bpy.props.StringProperty(default="*.glb", options={"HIDDEN"})
    format: bpy.props.EnumProperty(
        name="Format", default="GLTF", update=match_filter_to_format,
        items=[(key, f.label, f"Keeps {f.keeps}; drops {f.drops}") for key, f in exporters.FORMATS.items()])

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and "gvf4d_frames" in context.active_object

    def invoke(self, context, event):
        if not self.filepath:
            name = bpy.path.clean_name(context.active_object.name)
            folder = os.path.dirname(bpy.path.abspath(context.blend_data.filepath)) if context.blend_data.filepath \
                else ""
            self.filepath = os.path.join(folder, name)
        self.filepath = export_path(self.filepath, self.format)
        match_filter_to_format(self, context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def check(self, context):
        """The file browser asks after each change: keeps the file name's extension that of the format."""
        path = export_path(self.filepath, self.format)
        if path == self.filepath or not os.path.basename(self.filepath):
            return False
        self.filepath = path
        return True

    def draw(self, context):
        """The format, and what it keeps and drops."""
        layout = self.layout
        layout.prop(self, "format")
        chosen = exporters.FORMATS[self.format]
        box = layout.box()
        for heading, text in (("Keeps", chosen.keeps), ("Drops", chosen.drops)):
            for i, line in enumerate(textwrap.wrap(f"{heading}: {text}", 36)):
                box.label(text=line, icon=("CHECKMARK" if heading == "Keeps" else "X") if i == 0 else "BLANK1")

    def execute(self, context):
        obj, path = context.active_object, export_path(self.filepath, self.format)
        try:
            written = exporters.FORMATS[self.format].export(obj, path)
        except (ValueError, OSError) as e:          # GVF4DFileError is a ValueError
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if isinstance(written, list):
            self.report({"INFO"}, f"Exported {len(written)} files: {written[0]} .. {os.path.basename(written[-1])}")
        else:
            self.report({"INFO"}, f"Exported {written}")
        return {"FINISHED"}
