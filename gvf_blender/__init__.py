"""GVF4D for Blender: footage of a moving object -> animated 3D Gaussian splat (canonical splat + variation field).

Generate sends the shot to the GVF4D backend (a separate process, `gvf4d serve`, started from Blender when none
runs), follows the job from a timer without blocking the UI, downloads the result next to the .blend and imports
it (keyframed splats or the deformed mesh); every run is a take in the shot's history, saved in the .blend and
followed again when the file is reopened. Results export to glTF and Alembic. Only register() loads the modules
that import bpy, so result_file.py stays importable anywhere.
"""


def _classes() -> tuple:
    """The classes to register, in order (the settings before the panels that draw them)."""
    from .operators import backend, generate, import_export, render, scene
    from .preferences import GVF4DPreferences
    from .properties import GVF4DSettings
    from .ui import panels
    return (GVF4DPreferences, GVF4DSettings, import_export.GVF4D_OT_import, import_export.GVF4D_OT_export,
            *generate.CLASSES, *backend.CLASSES, *scene.CLASSES, *render.CLASSES, panels.GVF4D_PT_panel,
            panels.GVF4D_PT_clip_panel)


def register():
    import bpy

    from . import handlers
    from .properties import GVF4DSettings
    from .ui.menus import draw_import_entry
    for cls in _classes():
        bpy.utils.register_class(cls)
    bpy.types.Scene.gvf4d = bpy.props.PointerProperty(type=GVF4DSettings)
    bpy.types.TOPBAR_MT_file_import.append(draw_import_entry)
    handlers.register()


def unregister():
    import bpy

    from . import handlers
    from .jobs import stop_following
    from .ui.menus import draw_import_entry
    handlers.unregister()
    bpy.types.TOPBAR_MT_file_import.remove(draw_import_entry)
    stop_following()
    del bpy.types.Scene.gvf4d
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
