"""Tensor names, dtypes and shapes of the .gvf4d schema."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SCHEMA_VERSION = 1
METADATA_KEY = "gvf4d"


class ResultFileError(ValueError):
    """A .gvf4d file that cannot be read or does not follow the schema."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class TensorSpec:
    """dtypes: the dtypes allowed; dims: symbolic shape (N Gaussians, T frames, K SH, V verts, F faces)."""

    dtypes: tuple[str, ...]
    dims: tuple
    required: bool


TENSOR_SPECS: dict[str, TensorSpec] = {
    "canonical.position": TensorSpec(("F32",), ("N", 3), True),
    "canonical.scale": TensorSpec(("F32",), ("N", 3), True),
    "canonical.rotation": TensorSpec(("F32",), ("N", 4), True),
    "canonical.opacity": TensorSpec(("F32",), ("N",), True),
    "canonical.sh_dc": TensorSpec(("F32",), ("N", 3), True),
    "canonical.sh_rest": TensorSpec(("F16", "F32"), ("N", "K", 3), False),
    "frames.position": TensorSpec(("F32",), ("T", "N", 3), True),
    "frames.scale": TensorSpec(("F16", "F32"), ("T", "N", 3), False),
    "frames.rotation": TensorSpec(("F16", "F32"), ("T", "N", 4), False),
    "frames.opacity": TensorSpec(("F16", "F32"), ("T", "N"), False),
    "frames.sh_dc": TensorSpec(("F16", "F32"), ("T", "N", 3), False),
    # the extracted mesh and its per-frame vertex positions (all four or none)
    "mesh.vertices": TensorSpec(("F32",), ("V", 3), False),
    "mesh.faces": TensorSpec(("I32",), ("F", 3), False),
    "mesh.colors": TensorSpec(("F32",), ("V", 3), False),
    "frames.mesh_vertices": TensorSpec(("F32",), ("T", "V", 3), False),
}
MESH_GROUP = ("mesh.vertices", "mesh.faces", "mesh.colors", "frames.mesh_vertices")

# attribute name of AnimatedGaussians / Gaussians <-> tensor names
TRACK_TENSORS = {
    "positions": "frames.position",
    "scales": "frames.scale",
    "quats": "frames.rotation",
    "opacities": "frames.opacity",
    "sh_dc": "frames.sh_dc",
}
CANONICAL_TENSORS = {
    "means": "canonical.position",
    "scales": "canonical.scale",
    "quats": "canonical.rotation",
    "opacities": "canonical.opacity",
    "sh_dc": "canonical.sh_dc",
    "sh_rest": "canonical.sh_rest",
}


def check_shapes(path, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> dict[str, int]:
    """Checks tensor names, dtypes and shapes against the schema; returns the bound dims (N, T, ...)."""
    unknown = sorted(set(shapes) - set(TENSOR_SPECS))
    if unknown:
        raise ResultFileError(path, f"unknown tensors {unknown} (schema version {SCHEMA_VERSION})")
    missing = [k for k, s in TENSOR_SPECS.items() if s.required and k not in shapes]
    if missing:
        raise ResultFileError(path, f"missing required tensors {missing}")
    mesh_present = [k for k in MESH_GROUP if k in shapes]
    if mesh_present and len(mesh_present) != len(MESH_GROUP):
        raise ResultFileError(path, f"incomplete mesh: has {mesh_present}, needs all of {list(MESH_GROUP)}")
    bound: dict[str, int] = {}
    for name, spec in TENSOR_SPECS.items():
        if name not in shapes:
            continue
        if dtypes[name] not in spec.dtypes:
            raise ResultFileError(path, f"tensor {name} has dtype {dtypes[name]}, expected one of {list(spec.dtypes)}")
        shape = shapes[name]
        if len(shape) != len(spec.dims):
            raise ResultFileError(path, f"tensor {name} has shape {list(shape)}, expected {list(spec.dims)}")
        for size, dim in zip(shape, spec.dims):
            if isinstance(dim, int):
                if size != dim:
                    raise ResultFileError(path, f"tensor {name} has shape {list(shape)}, expected {list(spec.dims)}")
            elif bound.setdefault(dim, size) != size:
                raise ResultFileError(path, f"tensor {name} has {dim}={size}, but other tensors have {dim}={bound[dim]}")
    if bound.get("N", 0) < 1 or bound.get("T", 0) < 1:
        raise ResultFileError(path, f"empty result: {bound.get('N', 0)} Gaussians, {bound.get('T', 0)} frames")
    return bound


def optional_int(value) -> Optional[int]:
    return None if value is None else int(value)
