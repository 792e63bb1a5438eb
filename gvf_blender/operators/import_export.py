"""Importing a .gvf4d result (File > Import, the panel) and exporting an imported one to glTF or Alembic."""
import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .. import exporters, importer
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
    display: bpy.props.EnumProperty(name="Display", items=[("splat", "Splats", "Instanced ellipsoids"),
                                                           ("points", "Points", "Cheap, for heavy scenes")])
    frame_start: bpy.props.IntProperty(name="Start frame", default=1,
                                       description="The scene frame the result's first frame lands on")

    def invoke(self, context, event):
        self.frame_start = context.scene.frame_start
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        try:
            if self.mode == "SPLATS":
                obj = importer.import_splats(self.filepath, frame_start=self.frame_start, display=self.display)
            else:
                obj = importer.import_mesh(self.filepath, frame_start=self.frame_start)
        except (GVF4DFileError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Imported {obj.name}: {obj['gvf4d_frames']} frames from frame {self.frame_start}")
        return {"FINISHED"}


class GVF4D_OT_export(bpy.types.Operator, ExportHelper):
    """Export the active GVF4D object (glTF with morph targets, or Alembic) over its frame range"""
    bl_idname = "gvf4d.export_result"
    bl_label = "Export GVF4D Animation"
    filename_ext = ".glb"
    format: bpy.props.EnumProperty(name="Format", items=[("GLTF", "glTF (.glb)", ""), ("ABC", "Alembic (.abc)", "")])

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and "gvf4d_frames" in context.active_object

    def execute(self, context):
        obj = context.active_object
        if self.format == "GLTF":
            exporters.export_gltf(obj, self.filepath)
        else:
            exporters.export_alembic(obj, str(self.filepath).rsplit(".", 1)[0] + ".abc")
        return {"FINISHED"}
