"""Reader of .gvf4d results for the add-on: Python stdlib + numpy only (no torch, no safetensors).

The file is the safetensors layout: u64 little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw buffers. Tensors are memory-mapped, so a frame of a (T, N, 3)
track is read without touching the other frames.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

SCHEMA_VERSION = 1
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I32": np.dtype("<i4"), "F64": np.dtype("<f8"),
           "I64": np.dtype("<i8"), "U8": np.dtype("u1")}
_MAX_HEADER = 100 * 1024 * 1024
# name: (dims, required); dims are sizes or the symbols N (Gaussians), T (frames), K, V, F
_SCHEMA = {
    "canonical.position": (("N", 3), True), "canonical.scale": (("N", 3), True),
    "canonical.rotation": (("N", 4), True), "canonical.opacity": (("N",), True),
    "canonical.sh_dc": (("N", 3), True), "canonical.sh_rest": (("N", "K", 3), False),
    "frames.position": (("T", "N", 3), True), "frames.scale": (("T", "N", 3), False),
    "frames.rotation": (("T", "N", 4), False), "frames.opacity": (("T", "N"), False),
    "frames.sh_dc": (("T", "N", 3), False),
    "mesh.vertices": (("V", 3), False), "mesh.faces": (("F", 3), False), "mesh.colors": (("V", 3), False),
    "frames.mesh_vertices": (("T", "V", 3), False),
}
_MESH = ("mesh.vertices", "mesh.faces", "mesh.colors", "frames.mesh_vertices")


class GVF4DFileError(ValueError):
    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class GVF4DFile:
    """A validated .gvf4d file. metadata: dict; num_frames, num_gaussians; array(name), frame(name, t)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    self._fail(f"too short to be a .gvf4d file ({size} bytes)")
                n = int.from_bytes(head, "little")
                if n < 2 or n > min(_MAX_HEADER, size - 8):
                    self._fail(f"header length {n} does not fit the file size {size} (truncated or not a .gvf4d file)")
                raw = f.read(n)
        except OSError as e:
            self._fail(f"cannot be read ({e.strerror or e})")
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._fail(f"header is not valid JSON ({e})")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        self._data_start = 8 + n
        self._entries = self._check_layout(header, size - self._data_start)
        self.dims = self._check_schema()
        self.metadata = self._check_metadata(header.get("__metadata__"))
        self._maps = {}

    def _fail(self, problem):
        raise GVF4DFileError(self.path, problem)

    def _check_layout(self, header, data_size):
        entries, spans = {}, []
        for name, e in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(e, dict) or e.get("dtype") not in _DTYPES:
                self._fail(f"tensor {name!r} has an unknown or missing dtype")
            shape, offs = e.get("shape"), e.get("data_offsets")
            if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
                    or not isinstance(offs, list) or len(offs) != 2
                    or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
                self._fail(f"tensor {name!r} has a malformed shape or data_offsets")
            begin, end = offs
            nbytes = math.prod(shape) * _DTYPES[e["dtype"]].itemsize
            if not 0 <= begin <= end <= data_size or end - begin != nbytes:
                self._fail(f"tensor {name!r} byte range {offs} does not match its shape {shape} within {data_size} data bytes (truncated file?)")
            entries[name] = (_DTYPES[e["dtype"]], tuple(shape), begin, e["dtype"])
            spans.append((begin, end))
        pos = 0
        for begin, end in sorted(spans):
            if begin != pos:
                self._fail("tensor buffers overlap or leave gaps")
            pos = end
        if pos != data_size:
            self._fail(f"data section is {data_size} bytes but the tensors cover {pos} (truncated or padded file)")
        return entries

    def _check_schema(self):
        unknown = sorted(set(self._entries) - set(_SCHEMA))
        if unknown:
            self._fail(f"unknown tensors {unknown}")
        missing = [k for k, (_, req) in _SCHEMA.items() if req and k not in self._entries]
        if missing:
            self._fail(f"missing required tensors {missing}")
        mesh = [k for k in _MESH if k in self._entries]
        if mesh and len(mesh) != len(_MESH):
            self._fail(f"incomplete mesh: has {mesh}")
        bound = {}
        for name, (dims, _) in _SCHEMA.items():
            if name not in self._entries:
                continue
            shape = self._entries[name][1]
            if len(shape) != len(dims):
                self._fail(f"tensor {name} has shape {list(shape)}, expected {list(dims)}")
            for s, d in zip(shape, dims):
                if (isinstance(d, int) and s != d) or (isinstance(d, str) and bound.setdefault(d, s) != s):
                    self._fail(f"tensor {name} has shape {list(shape)}, inconsistent with {list(dims)} ({bound})")
        if bound.get("N", 0) < 1 or bound.get("T", 0) < 1:
            self._fail("empty result (no Gaussians or no frames)")
        return bound

    def _check_metadata(self, meta):
        if not isinstance(meta, dict) or not isinstance(meta.get("gvf4d"), str):
            self._fail("header has no gvf4d metadata")
        try:
            m = json.loads(meta["gvf4d"])
        except json.JSONDecodeError as e:
            self._fail(f"metadata is not valid JSON ({e})")
        if not isinstance(m, dict):
            self._fail("metadata is not a JSON object")
        if m.get("schema_version") != SCHEMA_VERSION:
            self._fail(f"schema version {m.get('schema_version')!r}; this add-on reads version {SCHEMA_VERSION} "
                       "(update the add-on or the backend so they match)")
        fps = m.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            self._fail(f"metadata fps {fps!r} is not a positive number")
        if m.get("frame_count") != self.dims["T"]:
            self._fail(f"metadata frame_count {m.get('frame_count')!r} but the tracks hold {self.dims['T']} frames")
        return m

    @property
    def num_frames(self):
        return self.dims["T"]

    @property
    def num_gaussians(self):
        return self.dims["N"]

    def has(self, name):
        return name in self._entries

    def array(self, name):
        """The whole tensor, memory-mapped read-only (numpy converts on arithmetic)."""
        if name not in self._maps:
            if name not in self._entries:
                raise KeyError(f"{self.path}: no tensor {name}")
            dtype, shape, begin, _ = self._entries[name]
            if math.prod(shape) == 0:
                self._maps[name] = np.zeros(shape, dtype)
            else:
                self._maps[name] = np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + begin, shape=shape)
        return self._maps[name]

    def frame(self, name, t):
        """Frame t of a (T, ...) track as float32 (reads only that frame's bytes)."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"{self.path}: frame {t} outside 0..{self.num_frames - 1}")
        return np.asarray(self.array(name)[t], dtype=np.float32)
