"""The shot's generation settings (`Scene.gvf4d`, saved in the .blend) and the backend request they make."""
from pathlib import Path

import bpy

from .assets import export_object_glb


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
    frames: bpy.props.IntProperty(name="Frames", default=0, min=0,
                                  description="At most this many frames of the range (0: every frame)")
    start: bpy.props.IntProperty(name="First footage frame", default=0, min=0)
    stride: bpy.props.IntProperty(name="Stride", default=1, min=1)
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    fit_iterations: bpy.props.IntProperty(name="Fit steps per frame", default=20, min=1)
    precision: bpy.props.EnumProperty(name="Precision", items=[
        ("auto", "Auto", "Half precision (fp16) on a GPU, fp32 on the CPU"),
        ("fp32", "fp32", "Full precision: twice the GPU memory of fp16"),
        ("fp16", "fp16", "Half precision"),
        ("bf16", "bf16", "bfloat16: half precision with fp32's range")], default="auto")
    mesh_samples: bpy.props.IntProperty(name="Gaussians on the mesh", default=100_000, min=1_000,
                                        description="Mesh canonical: how many Gaussians are sampled on its surface")
    frame_start: bpy.props.IntProperty(name="Scene start frame", default=1)
    import_as: bpy.props.EnumProperty(name="Import as", items=[("SPLATS", "Keyframed splats", ""), ("MESH", "Deformed mesh", "")])
    display: bpy.props.EnumProperty(name="Display", items=[("splat", "Splats", ""), ("points", "Points", "")])
    status: bpy.props.StringProperty(name="Status")
    progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")

    @staticmethod
    def movie_clip(context) -> bpy.types.MovieClip:
        """The clip of the Movie Clip editor, else the scene's active clip."""
        clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
        if clip is None:
            raise ValueError("no active movie clip: open one in the Movie Clip editor, or pick a file")
        return clip

    def footage_path(self, context) -> str:
        """The shot: the footage's absolute path, which also keys its takes."""
        if self.source == "CLIP":
            clip = self.movie_clip(context)
            return bpy.path.abspath(clip.filepath, library=clip.library)
        return bpy.path.abspath(self.footage)

    def fewer_frames(self, context) -> int:
        """Half the frames the shot asks for: of `frames`, or of the clip's range when it asks for every frame
        (a footage file's length is not known here: then the published model's 32-frame window)."""
        count = self.frames
        if not count and self.source == "CLIP":
            try:
                count = max(1, (self.movie_clip(context).frame_duration - self.start) // self.stride)
            except ValueError:
                count = 0
        return max(1, count // 2) if count else 32

    def canonical_request(self, context) -> dict:
        """{"canonical": kind, "canonical_path": file or None}; the selected object is written as a GLB first."""
        if self.canonical_source == "trellis":
            return {"canonical": "trellis", "canonical_path": None}
        if self.canonical_source == "object":
            obj = context.view_layer.objects.active
            folder = Path(bpy.path.abspath("//") or bpy.app.tempdir) / "gvf4d_assets"
            name = bpy.path.clean_name(obj.name) if obj else "object"
            return {"canonical": "mesh", "canonical_path": str(export_object_glb(obj, folder / f"{name}.glb"))}
        return {"canonical": self.canonical_source, "canonical_path": bpy.path.abspath(self.canonical)}

    def request(self, context) -> dict:
        """The backend's job fields for this shot."""
        return {"footage": self.footage_path(context), **self.canonical_request(context),
                "engine": self.engine, "weights": bpy.path.abspath(self.weights) if self.weights else None,
                "frames": self.frames or None, "start": self.start, "stride": self.stride, "seed": self.seed,
                "fit_iterations": self.fit_iterations, "mesh": self.extract_mesh or self.import_as == "MESH",
                "precision": self.precision, "mesh_samples": self.mesh_samples}

    def take_fields(self) -> dict:
        """What importing the take needs later, recorded with it (the settings may change before it is done)."""
        return {"import_as": self.import_as, "display": self.display, "frame_start": self.frame_start}
