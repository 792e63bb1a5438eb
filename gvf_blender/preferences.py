"""The add-on's preferences: where the backend runs (a data folder's lock file, or URL + token) and the Python
interpreter that starts a local one."""
import bpy

from .backend import Backend, find_backend


class GVF4DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__
    backend_url: bpy.props.StringProperty(name="Backend URL", description="Leave empty to use the local backend's lock file")
    token: bpy.props.StringProperty(name="Token", subtype="PASSWORD")
    data_dir: bpy.props.StringProperty(name="Backend data folder", subtype="DIR_PATH",
                                       description="Where `gvf4d serve` keeps its lock file (default ~/.local/share/gvf4d)")
    python: bpy.props.StringProperty(name="Backend Python", subtype="FILE_PATH",
                                     description="The interpreter of the backend's environment (e.g. .venv/bin/python), "
                                                 "to start a local backend from Blender")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "python")
        col.operator("gvf4d.start_backend", icon="PLAY")
        col.prop(self, "data_dir")
        col.prop(self, "backend_url")
        col.prop(self, "token")
        col.operator("gvf4d.check_backend", icon="CHECKMARK")


def addon_preferences(context):
    """The GVF4DPreferences of the enabled add-on, or None (registered by a script, not enabled)."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def backend_from_preferences(context) -> Backend:
    """The backend the preferences name (URL + token, or a data folder), else the default local one."""
    prefs = addon_preferences(context)
    return find_backend(prefs.backend_url, prefs.token, prefs.data_dir) if prefs else find_backend()
