"""The add-on's preferences: where the backend runs (a data folder's lock file, or URL + token for a backend on
another machine) and what starts a local one (the backend environment's Python or its `gvf4d` executable)."""
import bpy


class GVF4DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__
    backend_url: bpy.props.StringProperty(name="Backend URL",
                                          description="A backend on another machine; leave empty for the local one")
    token: bpy.props.StringProperty(name="Token", subtype="PASSWORD")
    data_dir: bpy.props.StringProperty(name="Backend data folder", subtype="DIR_PATH",
                                       description="Where `gvf4d serve` keeps its jobs, log and lock file "
                                                   "(default $GVF4D_HOME or ~/.local/share/gvf4d)")
    python: bpy.props.StringProperty(name="Backend Python", subtype="FILE_PATH",
                                     description="The backend environment's interpreter (e.g. .venv/bin/python) or "
                                                 "its gvf4d executable, to start a local backend from Blender; "
                                                 "filled in from a running backend's lock file when empty")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "python")
        col.prop(self, "data_dir")
        row = col.row()
        row.operator("gvf4d.start_backend", icon="PLAY")
        row.operator("gvf4d.stop_backend", icon="PAUSE")
        col.separator()
        col.prop(self, "backend_url")
        col.prop(self, "token")
        row = col.row()
        row.operator("gvf4d.check_backend", icon="CHECKMARK")
        row.operator("gvf4d.copy_diagnostics", icon="COPYDOWN")


def addon_preferences(context):
    """The GVF4DPreferences of the enabled add-on, or None (registered by a script, not enabled)."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None
