"""glTF exports of an imported result, written from its `.gvf4d` file (Blender's glTF exporter is not used).

- `export_gltf_splat`: the canonical splat as a `KHR_gaussian_splatting` point primitive (the extension as of
  KhronosGroup/glTF commit 63770cc, "Editorial review" #2567, status Release Candidate): POSITION,
  KHR_gaussian_splatting:ROTATION (x-y-z-w) / :SCALE (linear) / :OPACITY (linear) / :SH_DEGREE_l_COEF_n, kernel
  "ellipse", colour space "srgb_rec709_display" (3DGS colours are display values), COLOR_0 as the fallback
  colour (linear rgb, opacity in alpha). No animation: the extension has none.
- `export_gltf`: the animation as morph targets, one per frame, and a weights animation switching them one-hot
  frame by frame (LINEAR, so playback blends neighbouring frames): target t holds frame t's displacement from
  frame 0. Points for a splat, triangles for a deformed mesh; COLOR_0 the canonical colour. Positions only.

Both are in glTF's Y-up coordinates with the object's world matrix baked in, so they land where the object sits
in the scene; times run from 0 at the result's fps.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..color_space import srgb_to_linear
from ..frame_cache import SH_C0
from . import source
from .glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GlbWriter
from .splat import SH_BANDS, Similarity, Splat, sh_degree

KHR_GAUSSIAN_SPLATTING = "KHR_gaussian_splatting"
MODE_POINTS, MODE_TRIANGLES = 0, 4
Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])   # Blender (Z up) -> glTF (Y up)


def _scene(glb: GlbWriter, obj, primitive: dict, **mesh) -> None:
    glb.gltf.update(meshes=[{"name": obj.data.name, "primitives": [primitive], **mesh}],
                    nodes=[{"name": obj.name, "mesh": 0}], scenes=[{"nodes": [0]}], scene=0)


def export_gltf_splat(obj, path) -> str:
    """The object's canonical splat as a `KHR_gaussian_splatting` .glb (SH bands up to degree 3)."""
    f = source.open_result(obj)
    splat = Splat.canonical(f)
    degree = sh_degree(0 if splat.sh_rest is None else splat.sh_rest.shape[1])
    whole_bands = splat.sh_rest[:, :SH_BANDS[degree - 1].stop] if degree else None
    splat = Similarity.from_matrix(Y_UP @ source.scene_matrix(obj)).apply(replace(splat, sh_rest=whole_bands))
    glb = GlbWriter()
    ext = KHR_GAUSSIAN_SPLATTING
    opacity = np.clip(splat.opacity, 0.0, 1.0).astype(np.float32)
    fallback = np.concatenate([srgb_to_linear(0.5 + SH_C0 * splat.sh_dc), opacity[:, None]], 1).astype(np.float32)
    attributes = {
        "POSITION": glb.add(splat.position, "VEC3", ARRAY_BUFFER, bounds=True),
        "COLOR_0": glb.add(fallback, "VEC4", ARRAY_BUFFER),
        f"{ext}:ROTATION": glb.add(splat.rotation[:, [1, 2, 3, 0]], "VEC4", ARRAY_BUFFER),
        f"{ext}:SCALE": glb.add(splat.scale, "VEC3", ARRAY_BUFFER),
        f"{ext}:OPACITY": glb.add(opacity, "SCALAR", ARRAY_BUFFER),
        f"{ext}:SH_DEGREE_0_COEF_0": glb.add(splat.sh_dc, "VEC3", ARRAY_BUFFER),
    }
    for l, band in enumerate(SH_BANDS[:degree], start=1):
        for n, k in enumerate(range(band.start, band.stop)):
            attributes[f"{ext}:SH_DEGREE_{l}_COEF_{n}"] = glb.add(splat.sh_rest[:, k], "VEC3", ARRAY_BUFFER)
    glb.gltf["extensionsUsed"] = [ext]
    _scene(glb, obj, {"attributes": attributes, "mode": MODE_POINTS, "extensions": {ext: {
        "kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
        "sortingMethod": "cameraDistance"}}})
    return glb.write(path)


def export_gltf(obj, path) -> str:
    """The object's animation as morph targets + a weights animation (.glb): the splat's centres as points, or
    the deformed mesh's triangles."""
    f = source.open_result(obj)
    as_mesh = source.is_deformed_mesh(obj)
    matrix = Y_UP @ source.scene_matrix(obj)
    track = "frames.mesh_vertices" if as_mesh else "frames.position"
    T = f.num_frames

    def positions(t: int) -> np.ndarray:
        return (f.frame(track, t) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)

    base = positions(0)
    n = len(base)
    rgb = f.array("mesh.colors") if as_mesh else 0.5 + SH_C0 * np.asarray(f.array("canonical.sh_dc"))
    glb = GlbWriter()
    attributes = {"POSITION": glb.add(base, "VEC3", ARRAY_BUFFER, bounds=True),
                  "COLOR_0": glb.add(srgb_to_linear(rgb).astype(np.float32), "VEC3", ARRAY_BUFFER)}
    targets = [{"POSITION": glb.add_zeros(n, "VEC3", bounds=True)}]
    for t in range(1, T):   # the extents now, the displacements again when the file is written
        d = positions(t) - base
        targets.append({"POSITION": glb.add_lazy(lambda t=t: positions(t) - base, n, np.float32, "VEC3",
                                                 ARRAY_BUFFER, (d.min(0), d.max(0)))})
    primitive = {"attributes": attributes, "targets": targets, "mode": MODE_TRIANGLES if as_mesh else MODE_POINTS}
    if as_mesh:
        faces = np.asarray(f.array("mesh.faces"), np.uint32)
        if np.linalg.det(matrix[:3, :3]) < 0:      # a mirroring matrix turns the faces inside out
            faces = faces[:, ::-1]
        primitive["indices"] = glb.add(faces.reshape(-1), "SCALAR", ELEMENT_ARRAY_BUFFER)
    times = glb.add(np.arange(T, dtype=np.float32) / np.float32(f.metadata["fps"]), "SCALAR", bounds=True)
    weights = glb.add(np.eye(T, dtype=np.float32).reshape(-1), "SCALAR")
    _scene(glb, obj, primitive, weights=[1.0] + [0.0] * (T - 1),
           extras={"targetNames": [f"frame_{t:04d}" for t in range(T)]})
    glb.gltf["animations"] = [{"name": "gvf4d", "samplers": [{"input": times, "output": weights,
                                                              "interpolation": "LINEAR"}],
                               "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}]
    return glb.write(path)
