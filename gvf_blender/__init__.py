"""GVF4D for Blender: footage of a moving object -> animated 3D Gaussian splat (canonical splat + variation field).

Generate sends the shot to the GVF4D backend (a separate process, `gvf4d serve`), follows the job from a timer
without blocking the UI, downloads the result next to the .blend and imports it (keyframed splats or the
deformed mesh); every run is a take in the shot's history, saved in the .blend. Results export to glTF and
Alembic. bpy is imported inside register() and the submodules, so result_file.py stays importable anywhere.
"""

_classes = []
_following: dict = {}   # shot -> take index being followed by the timer


def follow_step():
    """The timer's body: one poll of every followed take; imports finished results. Returns the next delay."""
    import bpy
    from pathlib import Path

    from . import importer, jobs, takes
    from .backend import BackendError
    scene = bpy.context.scene
    settings = scene.gvf4d
    for shot, index in list(_following.items()):
        try:
            job = jobs.poll_take(scene, _backend(bpy.context), shot, index, _results_dir())
        except BackendError as e:
            settings.status = str(e)
            _following.pop(shot)
            continue
        settings.status = f"{job['state']}: {job['stage']} {100 * job['progress']:.0f}%"
        settings.progress = job["progress"]
        if job["state"] in jobs.FINISHED:
            _following.pop(shot)
            take = takes.takes(scene, shot)[index]
            if job["state"] == "done":
                importer_fn = importer.import_mesh if settings.import_as == "MESH" else importer.import_splats
                kwargs = {} if settings.import_as == "MESH" else {"display": settings.display}
                obj = importer_fn(bpy.path.abspath(take["result"]), name=f"{Path(shot).stem}_take{index}",
                                  frame_start=settings.frame_start, **kwargs)
                obj["gvf4d_shot"], obj["gvf4d_take"] = shot, index
                takes.set_active(scene, shot, index)
                settings.status = f"take {index} imported ({', '.join(job.get('reused_stages') or []) or 'no'} stages reused)"
            else:
                settings.status = f"take {index} {job['state']}: {job.get('error') or ''}"
    _status_bar(settings.status if _following else None)
    return 0.5 if _following else None


def _status_bar(text):
    """The job's state in the status bar while a take runs (nothing to show in background mode)."""
    import bpy
    workspace = getattr(bpy.context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(f"GVF4D: {text}" if text else None)


def _prefs(context):
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def _backend(context):
    from .backend import find_backend
    p = _prefs(context)
    return find_backend(p.backend_url, p.token, p.data_dir) if p else find_backend()


def _results_dir():
    import bpy
    from pathlib import Path
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//gvf4d_results"))
    import tempfile
    return Path(tempfile.gettempdir()) / "gvf4d_results"


def register():
    from pathlib import Path

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

    class GVF4DSettings(bpy.types.PropertyGroup):
        source: bpy.props.EnumProperty(name="Footage from", items=[("CLIP", "Active movie clip", ""),
                                                                    ("FILE", "File or image sequence", "")],
                                       default="FILE")
        footage: bpy.props.StringProperty(name="Footage", subtype="FILE_PATH",
                                          description="Video file, image folder or one image of a sequence")
        canonical_source: bpy.props.EnumProperty(name="Canonical", items=[
            ("trellis", "Generate (TRELLIS)", "From the first frame, as published (needs the weights)"),
            ("splat", "Splat file", "A 3DGS .ply"),
            ("mesh", "Mesh file", "A .glb/.obj/.ply mesh: Gaussians are sampled on its surface"),
            ("object", "Selected object", "The active mesh object, sent as a GLB")], default="splat")
        canonical: bpy.props.StringProperty(name="Canonical file", subtype="FILE_PATH",
                                            description="The splat (.ply) or mesh file")
        extract_mesh: bpy.props.BoolProperty(name="Extract mesh", default=False,
                                             description="Also extract a deforming mesh (for 'Import as: Deformed mesh')")
        engine: bpy.props.EnumProperty(name="Engine", items=[("fit", "Fit (no weights)", ""), ("gvf", "GVF diffusion", "")])
        weights: bpy.props.StringProperty(name="Weights", subtype="DIR_PATH")
        frames: bpy.props.IntProperty(name="Frames", default=32, min=1, max=512)
        start: bpy.props.IntProperty(name="First footage frame", default=0, min=0)
        stride: bpy.props.IntProperty(name="Stride", default=1, min=1)
        seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
        fit_iterations: bpy.props.IntProperty(name="Fit steps per frame", default=20, min=1)
        frame_start: bpy.props.IntProperty(name="Scene start frame", default=1)
        import_as: bpy.props.EnumProperty(name="Import as", items=[("SPLATS", "Keyframed splats", ""), ("MESH", "Deformed mesh", "")])
        display: bpy.props.EnumProperty(name="Display", items=[("splat", "Splats", ""), ("points", "Points", "")])
        status: bpy.props.StringProperty(name="Status")
        progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")

        def footage_path(self, context) -> str:
            if self.source == "CLIP":
                clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
                if clip is None:
                    raise ValueError("no active movie clip: open one in the Movie Clip editor, or pick a file")
                return bpy.path.abspath(clip.filepath, library=clip.library)
            return bpy.path.abspath(self.footage)

        def canonical_request(self, context) -> dict:
            """{"canonical": kind, "canonical_path": file or None}; the selected object is written as a GLB first."""
            if self.canonical_source == "trellis":
                return {"canonical": "trellis", "canonical_path": None}
            if self.canonical_source == "object":
                from .assets import export_object_glb
                obj = context.view_layer.objects.active
                folder = Path(bpy.path.abspath("//") or bpy.app.tempdir) / "gvf4d_assets"
                name = bpy.path.clean_name(obj.name) if obj else "object"
                return {"canonical": "mesh", "canonical_path": str(export_object_glb(obj, folder / f"{name}.glb"))}
            return {"canonical": self.canonical_source, "canonical_path": bpy.path.abspath(self.canonical)}

        def request(self, context) -> dict:
            return {"footage": self.footage_path(context), **self.canonical_request(context),
                    "engine": self.engine, "weights": bpy.path.abspath(self.weights) if self.weights else None,
                    "frames": self.frames, "start": self.start, "stride": self.stride, "seed": self.seed,
                    "fit_iterations": self.fit_iterations, "mesh": self.extract_mesh or self.import_as == "MESH"}

    class GVF4D_OT_generate(bpy.types.Operator):
        """Send this shot to the GVF4D backend; the result is imported as a new take when it is ready"""
        bl_idname = "gvf4d.generate"
        bl_label = "Generate"

        def execute(self, context):
            from . import jobs
            from .backend import BackendError
            s = context.scene.gvf4d
            try:
                shot = s.footage_path(context)
                if s.source == "CLIP":   # frame 1 of the result lands on the clip's start frame
                    clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
                    s.frame_start = clip.frame_start + s.start
                take = jobs.submit_take(context.scene, _backend(context), shot, s.request(context))
            except (BackendError, ValueError) as e:
                self.report({"ERROR"}, str(e))
                return {"CANCELLED"}
            _following[shot] = take["index"]
            s.status, s.progress = f"take {take['index']} queued", 0.0
            if not bpy.app.timers.is_registered(follow_step):
                bpy.app.timers.register(follow_step, first_interval=0.5)
            return {"FINISHED"}

    class GVF4D_OT_cancel(bpy.types.Operator):
        """Cancel the shot's running take"""
        bl_idname = "gvf4d.cancel"
        bl_label = "Cancel"

        def execute(self, context):
            from . import takes
            from .backend import BackendError
            try:
                shot = context.scene.gvf4d.footage_path(context)
            except ValueError:
                return {"CANCELLED"}
            if shot not in _following:
                return {"CANCELLED"}
            try:
                _backend(context).cancel(takes.takes(context.scene, shot)[_following[shot]]["job"])
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
            from . import takes
            try:
                shot = context.scene.gvf4d.footage_path(context)
                takes.set_active(context.scene, shot, self.index)
            except (ValueError, IndexError, KeyError) as e:
                self.report({"ERROR"}, str(e))
                return {"CANCELLED"}
            for obj in context.scene.objects:
                if obj.get("gvf4d_shot") == shot:
                    hidden = obj.get("gvf4d_take") != self.index
                    obj.hide_viewport = obj.hide_render = hidden
            return {"FINISHED"}

    class GVF4D_OT_start_backend(bpy.types.Operator):
        """Start a local backend (`gvf4d serve`) with the interpreter set in the preferences"""
        bl_idname = "gvf4d.start_backend"
        bl_label = "Start local backend"

        def execute(self, context):
            from .backend import BackendError, start_backend
            p = _prefs(context)
            if p is None or not p.python:
                self.report({"ERROR"}, "set the backend's Python interpreter in the GVF4D preferences first")
                return {"CANCELLED"}
            try:
                h = start_backend(bpy.path.abspath(p.python), bpy.path.abspath(p.data_dir) if p.data_dir else "").health()
            except BackendError as e:
                self.report({"ERROR"}, str(e))
                return {"CANCELLED"}
            self.report({"INFO"}, f"GVF4D backend {h['version']} running (GPU: {h['gpu'] or 'none'})")
            return {"FINISHED"}

    class GVF4D_OT_check_backend(bpy.types.Operator):
        """Ask the backend for its versions and GPU"""
        bl_idname = "gvf4d.check_backend"
        bl_label = "Check backend"

        def execute(self, context):
            from .backend import BackendError
            try:
                h = _backend(context).health()
            except BackendError as e:
                self.report({"ERROR"}, str(e))
                return {"CANCELLED"}
            w = h.get("weights")
            weights = ("; weights: " + ", ".join(f"{k} {v}" for k, v in w.items() if k != "folder")) if w else \
                "; no weights folder configured (fit engine only)"
            self.report({"INFO"}, f"GVF4D {h['version']}, torch {h['torch']}, GPU: {h['gpu'] or 'none (CPU)'}{weights}")
            return {"FINISHED"}

    class GVF4D_PT_panel(bpy.types.Panel):
        bl_label = "GVF4D"
        bl_idname = "GVF4D_PT_panel"
        bl_space_type = "VIEW_3D"
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
            from . import takes
            try:
                history = takes.takes(context.scene, s.footage_path(context))
                current = takes.active(context.scene, s.footage_path(context))
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

    class GVF4D_PT_clip_panel(bpy.types.Panel):
        bl_label = "GVF4D"
        bl_idname = "GVF4D_PT_clip_panel"
        bl_space_type = "CLIP_EDITOR"
        bl_region_type = "UI"
        bl_category = "GVF4D"
        draw = GVF4D_PT_panel.draw

    def menu_import(self, context):
        self.layout.operator(GVF4D_OT_import.bl_idname, text="GVF4D Result (.gvf4d)")

    _classes[:] = [GVF4DPreferences, GVF4DSettings, GVF4D_OT_import, GVF4D_OT_export, GVF4D_OT_generate,
                   GVF4D_OT_cancel, GVF4D_OT_activate_take, GVF4D_OT_start_backend, GVF4D_OT_check_backend, GVF4D_PT_panel, GVF4D_PT_clip_panel]
    for cls in _classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gvf4d = bpy.props.PointerProperty(type=GVF4DSettings)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    _classes.append(menu_import)


def unregister():
    import bpy
    if not _classes:
        return
    menu = _classes.pop()
    bpy.types.TOPBAR_MT_file_import.remove(menu)
    if bpy.app.timers.is_registered(follow_step):
        bpy.app.timers.unregister(follow_step)
    _following.clear()
    del bpy.types.Scene.gvf4d
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    _classes.clear()
