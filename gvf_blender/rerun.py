"""Rerunning a take: its motion made again as a new take, on the splat as the artist edited it in Blender
(deleted, moved, rescaled, recoloured Gaussians) or on the take's own canonical, with another seed, engine or
refinement; the take's footage and other settings are kept.

An edited splat goes to the backend as a 3DGS PLY in the result's space (the imported points' own coordinates;
the object's placement is not baked in), with the take's facing, alignment and normalisation, so the backend uses
it exactly (`canonical_exact`) and the new take sits where the old one did.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from . import frame_cache, importer, paths, splat_nodes, takes
from .atomic_file import atomic_output
from .exporters.ply import splat_ply_bytes
from .exporters.splat import Splat
from .result_file import GVF4DFile

# attribute type -> (foreach field, values per point), for the types the import writes
_FOREACH = {"FLOAT": ("value", 1), "FLOAT_VECTOR": ("vector", 3), "QUATERNION": ("value", 4),
            "FLOAT_COLOR": ("color", 4)}


def _attribute(mesh, name: str) -> np.ndarray:
    """A point attribute as float32 (N, width), width 1 squeezed."""
    attr = mesh.attributes[name]
    field, width = _FOREACH[attr.data_type]
    values = np.empty(len(mesh.vertices) * width, np.float32)
    attr.data.foreach_get(field, values)
    return values.reshape(-1, width) if width > 1 else values


def _positions(mesh) -> np.ndarray:
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def take_object(scene, shot: str, index: int):
    """The scene's object imported from take `index` of the shot (the shown one when several), None if none."""
    found = [o for o in scene.objects if o.get("gvf4d_shot") == shot and o.get("gvf4d_take") == index]
    found.sort(key=lambda o: o.hide_viewport)
    return found[0] if found else None


def is_edited(obj) -> bool:
    """Whether the take's splat was edited in Blender: points deleted or moved, or a canonical attribute changed
    since the import. False for an import made before the canonical positions were kept (nothing to compare)."""
    mesh = obj.data
    if splat_nodes.CANONICAL_POSITION_ATTRIBUTE not in mesh.attributes:
        return False
    f = GVF4DFile(paths.to_absolute(obj["gvf4d_path"]))
    if f.num_gaussians != len(mesh.vertices):
        return True
    imported = importer.canonical_attributes(f)
    if not np.array_equal(_positions(mesh), imported[splat_nodes.CANONICAL_POSITION_ATTRIBUTE][2]):
        return True
    return any(name not in mesh.attributes or not np.array_equal(_attribute(mesh, name), values)
               for name, (_, _, values) in imported.items())


def edited_splat(obj) -> Splat:
    """The object's Gaussians as they are now, in the result's space: the points' own positions (edits
    included, the placement left out), scale, rotation, opacity, colour and SH bands from their attributes."""
    mesh = obj.data
    if splat_nodes.CANONICAL_POSITION_ATTRIBUTE not in mesh.attributes:
        raise ValueError(f"{obj.name} was imported before edits could be sent (its points are frame 0's, not the "
                         "canonical splat's): import the take again, then edit it")
    rest = []
    while splat_nodes.SH_REST_ATTRIBUTE.format(len(rest) + 1) in mesh.attributes:
        rest.append(_attribute(mesh, splat_nodes.SH_REST_ATTRIBUTE.format(len(rest) + 1)))
    return Splat(position=_positions(mesh), rotation=_attribute(mesh, "rotation"), scale=_attribute(mesh, "scale"),
                 opacity=_attribute(mesh, "opacity"),
                 sh_dc=(_attribute(mesh, "color")[:, :3] - 0.5) / frame_cache.SH_C0,
                 sh_rest=np.stack(rest, 1) if rest else None).normalised()


def write_edited_canonical(obj, path) -> Path:
    """The object's edited Gaussians as a 3DGS PLY (the exports' layout) at path."""
    with atomic_output(path) as out:
        out.write(splat_ply_bytes(edited_splat(obj)))
    return Path(path)


def exact_space(metadata: dict) -> dict:
    """The request fields that say which space a result's canonical is in: its facing, alignment (and whether
    its values include it) and normalisation, as the backend recorded them."""
    canonical = metadata.get("canonical") or {}
    facing = canonical.get("facing") or canonical.get("alignment") or {}
    fields = {"canonical_exact": True, "facing_deg": float(facing.get("azimuth_deg", 0.0))}
    alignment = canonical.get("alignment")
    if alignment:
        fields["alignment"] = {"scale": alignment["scale"], "offset": alignment["offset"],
                               "applied": bool(alignment.get("applied", True))}
    normalisation = (metadata.get("coordinates") or {}).get("normalisation")
    if normalisation:
        fields["normalisation"] = {"centre": normalisation["centre"], "scale": normalisation["scale"]}
    return fields


def rerun_request(scene, shot: str, index: int, edited: bool, **changes) -> tuple[str, dict, dict]:
    """What a rerun of the shot's take `index` submits -> (footage, the backend request, the take's import
    fields). The take's settings with `changes` (seed, engine, refine); with `edited`, the take's object's splat
    written beside the results and given exactly."""
    take = takes.takes(scene, shot)[index]
    footage = str(paths.to_absolute(shot))
    request = {**take["settings"], "footage": footage, **changes}
    obj = take_object(scene, shot, index)
    if edited:
        if obj is None:
            raise ValueError(f"take {index} has no object in the scene to take the edited splat from")
        name = f"take_{index:03d}_edited_{uuid.uuid4().hex[:8]}.ply"
        ply = write_edited_canonical(obj, paths.results_dir() / name)
        result = GVF4DFile(paths.to_absolute(obj["gvf4d_path"]))
        request.update(canonical="splat", canonical_path=str(ply), **exact_space(result.metadata))
    fields = {name: take[name] for name in ("import_as", "display", "frame_start") if name in take}
    if obj is not None:      # placed as the take was (an edited trellis splat comes back as a "splat" source)
        fields["placement"] = obj.get("gvf4d_placement", "AUTO")
    return footage, request, fields


def default_edited(scene, shot: str, index: int) -> bool:
    """The rerun's default: the edited splat when the take's object was edited."""
    obj = take_object(scene, shot, index)
    return obj is not None and is_edited(obj)
