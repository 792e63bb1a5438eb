"""GVF4D for Blender: footage of a moving object -> animated 3D Gaussian splat (canonical splat + variation field).

This release imports .gvf4d results (keyframed splats or the deformed extracted mesh) and exports them to
glTF and Alembic. Talking to the backend (submit, progress, takes) arrives in a later release.
bpy is imported inside register() and the submodules, so result_file.py stays importable without Blender.
"""

_classes = []


def register():
    import bpy
    from bpy_extras.io_utils import ExportHelper, ImportHelper

    from . import exporters, importer
    from .result_file import GVF4DFileError

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

    class GVF4D_PT_panel(bpy.types.Panel):
        bl_label = "GVF4D"
        bl_idname = "GVF4D_PT_panel"
        bl_space_type = "VIEW_3D"
        bl_region_type = "UI"
        bl_category = "GVF4D"

        def draw(self, context):
            col = self.layout.column()
            col.operator(GVF4D_OT_import.bl_idname, icon="IMPORT")
            obj = context.active_object
            if obj is not None and "gvf4d_frames" in obj:
                start, end = exporters.frame_range(obj)
                col.label(text=f"{obj.name}: frames {start}-{end}")
                col.operator(GVF4D_OT_export.bl_idname, icon="EXPORT")

    def menu_import(self, context):
        self.layout.operator(GVF4D_OT_import.bl_idname, text="GVF4D Result (.gvf4d)")

    _classes[:] = [GVF4D_OT_import, GVF4D_OT_export, GVF4D_PT_panel]
    for cls in _classes:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    _classes.append(menu_import)


def unregister():
    import bpy
    if not _classes:
        return
    menu = _classes.pop()
    bpy.types.TOPBAR_MT_file_import.remove(menu)
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    _classes.clear()
