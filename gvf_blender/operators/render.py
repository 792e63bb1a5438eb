"""Render with the backend: the active GVF4D result drawn by the backend's own rasterizer from the scene's camera
over the frame range, downloaded as an EXR sequence and composited over Blender's render by depth
(backend_render.py holds the parts that need no operator)."""
import uuid

import bpy

from .. import backend_render, connection, jobs
from ..backend import BackendError


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
        backend_render.remember(scene, job["id"], plan, self.hide_object)
        jobs.follow(scene, job["id"], backend_render.RenderFollower(plan, self.hide_object))
        scene.gvf4d.status = f"render of {obj.name} queued ({len(plan.frames)} frames)"
        scene.gvf4d.progress = 0.0
        return {"FINISHED"}


CLASSES = (GVF4D_OT_render_with_backend,)
