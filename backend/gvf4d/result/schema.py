"""The .gvf4d schema (versions 1 and 2) and its validity rules, shared by the writer and the reader.

The add-on's numpy-only reader (gvf_blender/result_file.py) applies the same rules with the same messages;
tests/test_result_fuzz.py holds the two to one verdict on any bytes.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputFileError

SCHEMA_VERSION = 2
"""The version the writer writes."""
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "gvf4d"
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
FPS_RATIONAL_REL_TOL = 1e-5
"""How far fps may be from fps_rational's ratio (fps written to 5 significant digits passes)."""
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I32": np.dtype("<i4")}


class ResultFileError(InputFileError):
    """A .gvf4d file that cannot be read or does not follow the schema (or values the writer refuses)."""


@dataclass(frozen=True)
class TensorSpec:
    """dtypes: the dtypes allowed; dims: symbolic shape (N Gaussians, T frames, K SH, V verts, F faces)."""

    dtypes: tuple[str, ...]
    dims: tuple


TENSOR_SPECS: dict[str, TensorSpec] = {
    "canonical.position": TensorSpec(("F32",), ("N", 3)),
    "canonical.scale": TensorSpec(("F32",), ("N", 3)),
    "canonical.rotation": TensorSpec(("F32",), ("N", 4)),
    "canonical.opacity": TensorSpec(("F32",), ("N",)),
    "canonical.sh_dc": TensorSpec(("F32",), ("N", 3)),
    "canonical.sh_rest": TensorSpec(("F16", "F32"), ("N", "K", 3)),
    "frames.position": TensorSpec(("F32",), ("T", "N", 3)),
    "frames.position_delta": TensorSpec(("F16",), ("T", "N", 3)),   # version 2: frame minus canonical.position
    "frames.scale": TensorSpec(("F16", "F32"), ("T", "N", 3)),
    "frames.rotation": TensorSpec(("F16", "F32"), ("T", "N", 4)),
    "frames.opacity": TensorSpec(("F16", "F32"), ("T", "N")),
    "frames.sh_dc": TensorSpec(("F16", "F32"), ("T", "N", 3)),
    # the extracted mesh and its per-frame vertex positions (all four or none)
    "mesh.vertices": TensorSpec(("F32",), ("V", 3)),
    "mesh.faces": TensorSpec(("I32",), ("F", 3)),
    "mesh.colors": TensorSpec(("F32",), ("V", 3)),
    "frames.mesh_vertices": TensorSpec(("F32",), ("T", "V", 3)),
}
VERSION_TENSORS = {1: tuple(k for k in TENSOR_SPECS if k != "frames.position_delta"), 2: tuple(TENSOR_SPECS)}
REQUIRED_CANONICAL = ("canonical.position", "canonical.scale", "canonical.rotation", "canonical.opacity",
                      "canonical.sh_dc")
POSITION_STORAGES = ("frames.position", "frames.position_delta")   # exactly one of them
MESH_GROUP = ("mesh.vertices", "mesh.faces", "mesh.colors", "frames.mesh_vertices")
METADATA_SECTIONS = ("coordinates", "footage", "crop", "camera", "engine", "canonical", "mesh", "sampler", "timings")

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

# a JSON string (an unterminated one runs to the end), matched without backtracking
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = np.zeros(128, np.int64)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def brief(value) -> str:
    """repr(value), cut to 40 characters: a hostile header cannot make a message megabytes long."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:   # an integer too large for a float
        return False


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets in strings not counted), without recursion."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii"), np.uint8)
    depth = deepest = 0
    for start in range(0, brackets.size, 1 << 20):
        running = depth + np.cumsum(_BRACKET_STEP[brackets[start:start + (1 << 20)]])
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _object_without_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate keys in an object")
    return obj


def parse_json(path, text: str, what: str) -> Any:
    """Strict JSON (no NaN/Infinity, no duplicate keys) nested at most MAX_JSON_DEPTH deep."""
    depth = nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ResultFileError(path, f"{what} nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_without_duplicates)
    except ValueError as e:
        raise ResultFileError(path, f"{what} is not valid JSON ({e})") from None


def metadata_object(path, section) -> dict:
    """The parsed gvf4d metadata from the header's __metadata__ section."""
    if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
        raise ResultFileError(path, "header has no __metadata__ object of strings")
    if METADATA_KEY not in section:
        raise ResultFileError(path, "header has no gvf4d metadata")
    meta = parse_json(path, section[METADATA_KEY], "metadata")
    if not isinstance(meta, dict):
        raise ResultFileError(path, "metadata is not a JSON object")
    return meta


def check_version(path, meta: dict) -> int:
    version = meta.get("schema_version")
    if not is_int(version) or version not in READABLE_VERSIONS:
        raise ResultFileError(path, f"schema version {brief(version)}; readable versions are 1 and 2 "
                                    "(update the add-on or the backend so they match)")
    return version


def check_layout(path, header: dict, data_size: int, version: int) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """-> {name: (dtype, shape, begin)}: every entry well-formed, allowed in this version, its byte range inside the
    data section and matching its shape; the ranges cover the data section without gaps or overlap."""
    entries, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if name not in VERSION_TENSORS[version]:
            raise ResultFileError(path, f"unknown tensor {brief(name)} (schema version {version})")
        spec = TENSOR_SPECS[name]
        if not isinstance(entry, dict):
            raise ResultFileError(path, f"tensor {name} has a malformed entry {brief(entry)}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in spec.dtypes:
            raise ResultFileError(path, f"tensor {name} has dtype {brief(dtype)}; allowed: {', '.join(spec.dtypes)}")
        if (not isinstance(shape, list) or len(shape) != len(spec.dims)
                or not all(is_int(s) and s >= 0 for s in shape)):
            raise ResultFileError(path, f"tensor {name} has shape {brief(shape)}, expected {_dims(spec)}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
            raise ResultFileError(path, f"tensor {name} has malformed data_offsets {brief(offsets)}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
            raise ResultFileError(path, f"tensor {name} byte range {brief(offsets)} does not match its shape "
                                        f"{brief(shape)} within {data_size} data bytes (truncated file?)")
        entries[name] = (dtype, tuple(shape), begin)
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise ResultFileError(path, "tensor buffers overlap or leave gaps")
        covered = end
    if covered != data_size:
        raise ResultFileError(path, f"data section is {data_size} bytes but the tensors cover {covered} "
                                    "(truncated or padded file)")
    return entries


def check_tensors(path, shapes: dict[str, tuple[int, ...]], version: int) -> dict[str, int]:
    """-> the bound dims {N, T, ...}: required tensors present, one position storage, sizes consistent."""
    missing = [k for k in REQUIRED_CANONICAL if k not in shapes]
    if missing:
        raise ResultFileError(path, f"missing required tensors {missing}")
    positions = [k for k in POSITION_STORAGES if k in shapes]
    if len(positions) != 1:
        allowed = " or ".join(k for k in POSITION_STORAGES if k in VERSION_TENSORS[version])
        raise ResultFileError(path, f"holds {' and '.join(positions) or 'no positions'}; "
                                    f"a file stores exactly one of {allowed}")
    mesh = [k for k in MESH_GROUP if k in shapes]
    if mesh and len(mesh) != len(MESH_GROUP):
        raise ResultFileError(path, f"incomplete mesh: has {mesh}, needs all of {list(MESH_GROUP)}")
    bound: dict[str, int] = {}
    for name, spec in TENSOR_SPECS.items():
        if name not in shapes:
            continue
        shape = shapes[name]
        for size, dim in zip(shape, spec.dims):
            if isinstance(dim, int) and size != dim:
                raise ResultFileError(path, f"tensor {name} has shape {brief(list(shape))}, expected {_dims(spec)}")
            if isinstance(dim, str) and bound.setdefault(dim, size) != size:
                raise ResultFileError(path, f"tensor {name} has {dim}={brief(size)}, "
                                            f"but other tensors have {dim}={brief(bound[dim])}")
    if bound["N"] < 1 or bound["T"] < 1:
        raise ResultFileError(path, f"empty result: {brief(bound['N'])} Gaussians, {brief(bound['T'])} frames")
    return bound


def check_metadata(path, meta: dict, dims: dict[str, int]) -> None:
    """The metadata keys readers and tools rely on, with their types (docs/format.md, Metadata)."""
    def fail(problem):
        raise ResultFileError(path, problem)
    fps = meta.get("fps")
    if not is_finite_number(fps) or fps <= 0:
        fail(f"metadata fps {brief(fps)} is not a finite number > 0")
    rational = meta.get("fps_rational")
    if rational is not None:
        if (not isinstance(rational, list) or len(rational) != 2
                or not all(is_int(v) and 0 < v < 2 ** 31 for v in rational)):
            fail(f"metadata fps_rational {brief(rational)} is not [numerator, denominator] "
                 "of positive 32-bit integers")
        if not math.isclose(rational[0] / rational[1], fps, rel_tol=FPS_RATIONAL_REL_TOL):
            fail(f"metadata fps_rational {rational} disagrees with fps {fps}")
    for key, dim in (("frame_count", "T"), ("num_gaussians", "N")):
        if not is_int(meta.get(key)) or meta[key] != dims[dim]:
            fail(f"metadata {key} {brief(meta.get(key))} but the tensors hold {dims[dim]}")
    if meta.get("values") != "activated":
        fail(f"metadata values {brief(meta.get('values'))}, expected 'activated'")
    if not isinstance(meta.get("coordinates"), dict):
        fail(f"metadata coordinates {brief(meta.get('coordinates'))} is not an object")
    for key in METADATA_SECTIONS:
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            fail(f"metadata {key} {brief(meta[key])} is not an object")
    if meta.get("seed") is not None and not is_int(meta["seed"]):
        fail(f"metadata seed {brief(meta['seed'])} is not an integer")
    for stage, seconds in (meta.get("timings") or {}).items():
        if not is_finite_number(seconds):
            fail(f"metadata timings {brief(stage)} {brief(seconds)} is not a finite number")
    _check_footage(path, meta.get("footage") or {}, dims["T"])


def check_values(path, name: str, values: np.ndarray, dims: dict[str, int], frame: int | None = None) -> None:
    """The values of a tensor, or of one frame of a track: finite floats; face indices within the vertices."""
    if name == "mesh.faces":
        if values.size and not (values.min() >= 0 and values.max() < dims["V"]):
            raise ResultFileError(path, f"tensor mesh.faces holds vertex indices outside 0..{dims['V'] - 1}")
    elif not np.isfinite(values).all():
        where = "" if frame is None else f" in frame {frame}"
        raise ResultFileError(path, f"tensor {name} holds NaN or infinite values{where}")


def _check_footage(path, footage: dict, num_frames: int) -> None:
    def wrong(key, expected):
        raise ResultFileError(path, f"metadata footage {key} {brief(footage[key])} is not {expected}")
    indices = footage.get("frame_indices")
    if indices is not None and (not isinstance(indices, list) or len(indices) != num_frames
                                or not all(is_int(i) and i >= 0 for i in indices)):
        wrong("frame_indices", f"a list of {num_frames} source frame indices")
    if footage.get("fps") is not None and not (is_finite_number(footage["fps"]) and footage["fps"] > 0):
        wrong("fps", "a finite number > 0")
    if footage.get("stride") is not None and not (is_int(footage["stride"]) and footage["stride"] >= 1):
        wrong("stride", "an integer >= 1")
    for key in ("frame_start", "frame_end"):
        if footage.get(key) is not None and not (is_int(footage[key]) and footage[key] >= 0):
            wrong(key, "an integer >= 0")
    for key in ("path", "sha256"):
        if footage.get(key) is not None and not isinstance(footage[key], str):
            wrong(key, "a string")
    size = footage.get("source_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(is_int(s) and s > 0 for s in size)):
        wrong("source_size", "[width, height]")


def _dims(spec: TensorSpec) -> str:
    return f"({', '.join(map(str, spec.dims))})"
