"""Reader of .gvf4d results for the add-on: Python stdlib + numpy only (no torch, no safetensors, no bpy).

The file is the safetensors layout: u64 little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw buffers. Schema versions 1 and 2 are read (docs/format.md). The
validity rules are those of the backend's reader (gvf4d.result), message for message: the header, layout,
shapes and metadata are checked at open without reading tensor data; values are checked as they are read,
a frame at a time. Tensors are memory-mapped, so a frame of a (T, N, 3) track is read without the others.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat

import numpy as np

SCHEMA_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
FPS_RATIONAL_REL_TOL = 1e-5
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I32": np.dtype("<i4")}
# name: (allowed dtypes, dims); dims are sizes or the symbols N (Gaussians), T (frames), K, V, F
_TENSORS = {
    "canonical.position": (("F32",), ("N", 3)), "canonical.scale": (("F32",), ("N", 3)),
    "canonical.rotation": (("F32",), ("N", 4)), "canonical.opacity": (("F32",), ("N",)),
    "canonical.sh_dc": (("F32",), ("N", 3)), "canonical.sh_rest": (("F16", "F32"), ("N", "K", 3)),
    "frames.position": (("F32",), ("T", "N", 3)), "frames.position_delta": (("F16",), ("T", "N", 3)),
    "frames.scale": (("F16", "F32"), ("T", "N", 3)), "frames.rotation": (("F16", "F32"), ("T", "N", 4)),
    "frames.opacity": (("F16", "F32"), ("T", "N")), "frames.sh_dc": (("F16", "F32"), ("T", "N", 3)),
    "mesh.vertices": (("F32",), ("V", 3)), "mesh.faces": (("I32",), ("F", 3)), "mesh.colors": (("F32",), ("V", 3)),
    "frames.mesh_vertices": (("F32",), ("T", "V", 3)),
}
_VERSION_TENSORS = {1: tuple(k for k in _TENSORS if k != "frames.position_delta"), 2: tuple(_TENSORS)}
_CANONICAL = ("canonical.position", "canonical.scale", "canonical.rotation", "canonical.opacity", "canonical.sh_dc")
_POSITIONS = ("frames.position", "frames.position_delta")
_MESH = ("mesh.vertices", "mesh.faces", "mesh.colors", "frames.mesh_vertices")
_SECTIONS = ("coordinates", "footage", "crop", "camera", "engine", "canonical", "mesh", "sampler", "timings")
# a JSON string (an unterminated one runs to the end), matched without backtracking
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = np.zeros(128, np.int64)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


class GVF4DFileError(ValueError):
    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:   # an integer too large for a float
        return False


def _nesting_depth(text: str) -> int:
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


class GVF4DFile:
    """A validated .gvf4d file (schema 1 or 2). metadata: dict; num_frames, num_gaussians;
    has(name), array(name), frame(name, t). frames.position reads as absolute float32 positions whether the
    file stores them (F32) or stores frames.position_delta (F16, from canonical.position)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        text, self._data_start, data_size = self._read_header()
        header = self._parse_json(text, "header")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        meta = self._metadata_object(header.get("__metadata__"))
        version = meta.get("schema_version")
        if not _is_int(version) or version not in SCHEMA_VERSIONS:
            self._fail(f"schema version {_brief(version)}; readable versions are 1 and 2 "
                       "(update the add-on or the backend so they match)")
        self._entries = self._check_layout(header, data_size, version)
        self.dims = self._check_tensors(version)
        self._check_metadata(meta)
        self.metadata = meta
        self._maps, self._checked = {}, set()

    def _fail(self, problem):
        raise GVF4DFileError(self.path, problem)

    def _read_header(self):
        """-> (header text, offset of the data section, its size in bytes)."""
        try:
            st = os.stat(self.path)
            if not stat.S_ISREG(st.st_mode):
                self._fail("is not a regular file")
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    self._fail(f"too short to be a .gvf4d file ({st.st_size} bytes)")
                n = int.from_bytes(head, "little")
                if n < 2 or n > st.st_size - 8:
                    self._fail(f"header length {n} does not fit the file size {st.st_size} "
                               "(truncated or not a .gvf4d file)")
                if n > MAX_HEADER_BYTES:
                    self._fail(f"header length {n} is over the limit of {MAX_HEADER_BYTES} bytes")
                raw = f.read(n)
        except OSError as e:
            self._fail(f"cannot be read ({e.strerror or e})")
        if len(raw) != n:
            self._fail("changed while being read")
        try:
            return raw.decode("utf-8"), 8 + n, st.st_size - 8 - n
        except UnicodeDecodeError as e:
            self._fail(f"header is not UTF-8 ({e.reason} at byte {e.start})")

    def _parse_json(self, text, what):
        """Strict JSON (no NaN/Infinity, no duplicate keys) nested at most MAX_JSON_DEPTH deep."""
        depth = _nesting_depth(text)
        if depth > MAX_JSON_DEPTH:
            self._fail(f"{what} nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
        try:
            return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_without_duplicates)
        except ValueError as e:
            self._fail(f"{what} is not valid JSON ({e})")

    def _metadata_object(self, section):
        if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
            self._fail("header has no __metadata__ object of strings")
        if "gvf4d" not in section:
            self._fail("header has no gvf4d metadata")
        meta = self._parse_json(section["gvf4d"], "metadata")
        if not isinstance(meta, dict):
            self._fail("metadata is not a JSON object")
        return meta

    def _check_layout(self, header, data_size, version):
        """-> {name: (dtype name, shape, begin)}: every entry well-formed, allowed in this version, its byte range
        inside the data section and matching its shape; the ranges cover the data section without gaps or overlap."""
        entries, spans = {}, []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if name not in _VERSION_TENSORS[version]:
                self._fail(f"unknown tensor {_brief(name)} (schema version {version})")
            dtypes, dims = _TENSORS[name]
            if not isinstance(entry, dict):
                self._fail(f"tensor {name} has a malformed entry {_brief(entry)}")
            dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if not isinstance(dtype, str) or dtype not in dtypes:
                self._fail(f"tensor {name} has dtype {_brief(dtype)}; allowed: {', '.join(dtypes)}")
            if (not isinstance(shape, list) or len(shape) != len(dims)
                    or not all(_is_int(s) and s >= 0 for s in shape)):
                self._fail(f"tensor {name} has shape {_brief(shape)}, expected ({', '.join(map(str, dims))})")
            if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
                self._fail(f"tensor {name} has malformed data_offsets {_brief(offsets)}")
            begin, end = offsets
            if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * _DTYPES[dtype].itemsize:
                self._fail(f"tensor {name} byte range {_brief(offsets)} does not match its shape {_brief(shape)} "
                           f"within {data_size} data bytes (truncated file?)")
            entries[name] = (dtype, tuple(shape), begin)
            spans.append((begin, end))
        covered = 0
        for begin, end in sorted(spans):
            if begin != covered:
                self._fail("tensor buffers overlap or leave gaps")
            covered = end
        if covered != data_size:
            self._fail(f"data section is {data_size} bytes but the tensors cover {covered} (truncated or padded file)")
        return entries

    def _check_tensors(self, version):
        """-> the bound dims {N, T, ...}: required tensors present, one position storage, sizes consistent."""
        missing = [k for k in _CANONICAL if k not in self._entries]
        if missing:
            self._fail(f"missing required tensors {missing}")
        positions = [k for k in _POSITIONS if k in self._entries]
        if len(positions) != 1:
            allowed = " or ".join(k for k in _POSITIONS if k in _VERSION_TENSORS[version])
            self._fail(f"holds {' and '.join(positions) or 'no positions'}; a file stores exactly one of {allowed}")
        mesh = [k for k in _MESH if k in self._entries]
        if mesh and len(mesh) != len(_MESH):
            self._fail(f"incomplete mesh: has {mesh}, needs all of {list(_MESH)}")
        bound = {}
        for name, (_, dims) in _TENSORS.items():
            if name not in self._entries:
                continue
            shape = self._entries[name][1]
            for size, dim in zip(shape, dims):
                if isinstance(dim, int) and size != dim:
                    self._fail(f"tensor {name} has shape {_brief(list(shape))}, expected ({', '.join(map(str, dims))})")
                if isinstance(dim, str) and bound.setdefault(dim, size) != size:
                    self._fail(f"tensor {name} has {dim}={_brief(size)}, "
                               f"but other tensors have {dim}={_brief(bound[dim])}")
        if bound["N"] < 1 or bound["T"] < 1:
            self._fail(f"empty result: {_brief(bound['N'])} Gaussians, {_brief(bound['T'])} frames")
        return bound

    def _check_metadata(self, m):
        """The metadata keys readers and tools rely on, with their types (docs/format.md, Metadata)."""
        fps = m.get("fps")
        if not _is_finite_number(fps) or fps <= 0:
            self._fail(f"metadata fps {_brief(fps)} is not a finite number > 0")
        rational = m.get("fps_rational")
        if rational is not None:
            if (not isinstance(rational, list) or len(rational) != 2
                    or not all(_is_int(v) and 0 < v < 2 ** 31 for v in rational)):
                self._fail(f"metadata fps_rational {_brief(rational)} is not [numerator, denominator] "
                           "of positive 32-bit integers")
            if not math.isclose(rational[0] / rational[1], fps, rel_tol=FPS_RATIONAL_REL_TOL):
                self._fail(f"metadata fps_rational {rational} disagrees with fps {fps}")
        for key, dim in (("frame_count", "T"), ("num_gaussians", "N")):
            if not _is_int(m.get(key)) or m[key] != self.dims[dim]:
                self._fail(f"metadata {key} {_brief(m.get(key))} but the tensors hold {self.dims[dim]}")
        if m.get("values") != "activated":
            self._fail(f"metadata values {_brief(m.get('values'))}, expected 'activated'")
        if not isinstance(m.get("coordinates"), dict):
            self._fail(f"metadata coordinates {_brief(m.get('coordinates'))} is not an object")
        for key in _SECTIONS:
            if m.get(key) is not None and not isinstance(m[key], dict):
                self._fail(f"metadata {key} {_brief(m[key])} is not an object")
        if m.get("seed") is not None and not _is_int(m["seed"]):
            self._fail(f"metadata seed {_brief(m['seed'])} is not an integer")
        for stage, seconds in (m.get("timings") or {}).items():
            if not _is_finite_number(seconds):
                self._fail(f"metadata timings {_brief(stage)} {_brief(seconds)} is not a finite number")
        self._check_footage(m.get("footage") or {})

    def _check_footage(self, footage):
        def wrong(key, expected):
            self._fail(f"metadata footage {key} {_brief(footage[key])} is not {expected}")
        indices = footage.get("frame_indices")
        if indices is not None and (not isinstance(indices, list) or len(indices) != self.dims["T"]
                                    or not all(_is_int(i) and i >= 0 for i in indices)):
            wrong("frame_indices", f"a list of {self.dims['T']} source frame indices")
        if footage.get("fps") is not None and not (_is_finite_number(footage["fps"]) and footage["fps"] > 0):
            wrong("fps", "a finite number > 0")
        if footage.get("stride") is not None and not (_is_int(footage["stride"]) and footage["stride"] >= 1):
            wrong("stride", "an integer >= 1")
        for key in ("frame_start", "frame_end"):
            if footage.get(key) is not None and not (_is_int(footage[key]) and footage[key] >= 0):
                wrong(key, "an integer >= 0")
        for key in ("path", "sha256"):
            if footage.get(key) is not None and not isinstance(footage[key], str):
                wrong(key, "a string")
        size = footage.get("source_size")
        if size is not None and not (isinstance(size, list) and len(size) == 2
                                     and all(_is_int(s) and s > 0 for s in size)):
            wrong("source_size", "[width, height]")

    @property
    def num_frames(self):
        return self.dims["T"]

    @property
    def num_gaussians(self):
        return self.dims["N"]

    def has(self, name):
        return name in self._entries or (name == "frames.position" and "frames.position_delta" in self._entries)

    def _map(self, name):
        """The stored tensor, memory-mapped read-only, values unchecked."""
        if name not in self._maps:
            dtype, shape, begin = self._entries[name]
            if math.prod(shape) == 0:
                self._maps[name] = np.zeros(shape, _DTYPES[dtype])
            else:
                self._maps[name] = np.memmap(self.path, dtype=_DTYPES[dtype], mode="r",
                                             offset=self._data_start + begin, shape=shape)
        return self._maps[name]

    def _stored_frame(self, name, t):
        values = np.array(self._map(name)[t], dtype=np.float32)   # a writable copy, whatever the stored dtype
        if not np.isfinite(values).all():
            self._fail(f"tensor {name} holds NaN or infinite values in frame {t}")
        return values

    def array(self, name):
        """The whole tensor, its values checked: the stored tensor memory-mapped read-only (numpy converts on
        arithmetic), or for frames.position stored as deltas, the absolute positions (T, N, 3) float32."""
        if not self.has(name):
            raise KeyError(f"{self.path}: no tensor {name}")
        if name not in self._entries:
            return np.stack([self.frame(name, t) for t in range(self.num_frames)])
        values = self._map(name)
        if name not in self._checked:
            if _TENSORS[name][1][0] == "T":
                for t in range(self.num_frames):
                    self._stored_frame(name, t)
            elif name == "mesh.faces":
                if values.size and not (values.min() >= 0 and values.max() < self.dims["V"]):
                    self._fail(f"tensor mesh.faces holds vertex indices outside 0..{self.dims['V'] - 1}")
            elif not np.isfinite(values).all():
                self._fail(f"tensor {name} holds NaN or infinite values")
            self._checked.add(name)
        return values

    def frame(self, name, t):
        """Frame t of a (T, ...) track as a new float32 array, reading only that frame; NaN or Inf there is a
        GVF4DFileError."""
        if not self.has(name) or not name.startswith("frames."):
            raise KeyError(f"{self.path}: no track {name}")
        if not 0 <= t < self.num_frames:
            raise IndexError(f"{self.path}: frame {t} outside 0..{self.num_frames - 1}")
        if name == "frames.position" and name not in self._entries:
            return self.array("canonical.position") + self._stored_frame("frames.position_delta", t)
        return self._stored_frame(name, t)
