"""Render with the backend: the active GVF4D result drawn by the backend's own rasterizer from the scene's camera
over the frame range, downloaded as an EXR sequence and composited over Blender's render by depth
(backend_render.py holds the parts that need no operator)."""
import uuid
from dataclasses import dataclass

import bpy

from .. import backend_render, connection, jobs
from ..backend import Backend, BackendError


@dataclass
class RenderFollower:
    """What a render job does in Blender as the timer follows it (jobs.follow's on_change): its progress in the
    panel; once done, the frames downloaded into //gvf4d_renders/<object>/, loaded as an image sequence and
    composited, the object hidden in Blender's render when asked."""

    plan: backend_render.RenderPlan
    hide_object: bool

    def __call__(self, scene, backend: Backend, job: dict, text: str) -> None:
        s, name = scene.gvf4d, self.plan.object_name
        s.status, s.progress = f"render of {name}: {text}", job["progress"]
        if job["state"] in ("failed", "cancelled", "interrupted"):
            s.status = f"render of {name} {job['state']}: {job.get('error') or ''}"
        if job["state"] != "done":
            return
        folder = backend_render.renders_dir(name)
        for t in self.plan.frames:
            backend.download(job["id"], backend_render.frame_file(t), folder / backend_render.frame_file(t))
        try:
            image = backend_render.load_sequence(folder, self.plan)
            backend_render.setup_compositor(scene, image, self.plan)
        except (ValueError, RuntimeError) as e:
            s.status = f"render of {name}: frames in {folder}, but the compositor could not be set up: {e}"
            return
        obj = scene.objects.get(name)
        if self.hide_object and obj is not None:
            obj.hide_render = True
        s.status = f"{name}: {len(self.plan.frames)} frames rendered by the backend, composited by depth"


class GVF4D_OT_render_with_backend(bpy.types.Operator):
    """Render the active GVF4D result with the backend's rasterizer from the scene's camera over the frame range,
    and composite the frames over Blender's render by depth (a Z Combine in the compositor)"""
    bl_idname = "gvf4d.render_with_backend"
    bl_label = "Render with the backend"

    blend: bpy.props.EnumProperty(name="Blend", default="display", items=[
        ("display", "Display colours", "Blend the Gaussians' display colours, as 3DGS rasterizers and the model do"),
        ("linear", "Linear light", "Blend the Gaussians' colours in linear light, as Blender composites")])
    hide_object: bpy.props.BoolProperty(
        name="Hide the object in Blender's render", default=True,
        description="Once the frames are composited, hide the object in renders so the splat is not drawn twice")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and "gvf4d_path" in obj

    def execute(self, context):
        scene, obj = context.scene, context.active_object
        try:
            plan = backend_render.render_plan(scene, obj)
            backend = connection.connect(context)
            result = str(plan.result)
            if connection.is_remote(backend):           # its paths are not this machine's: send the file
                result = backend.upload(plan.result, uuid.uuid4().hex[:16])
            job = backend.submit(plan.request(result, self.blend))
        except (BackendError, ValueError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        jobs.follow(scene, job["id"], RenderFollower(plan, self.hide_object))
        scene.gvf4d.status = f"render of {obj.name} queued ({len(plan.frames)} frames)"
        scene.gvf4d.progress = 0.0
        return {"FINISHED"}


CLASSES = (GVF4D_OT_render_with_backend,)
