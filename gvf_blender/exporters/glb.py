"""A minimal binary glTF 2.0 (.glb) writer: accessors over one binary buffer, written in a single pass.

Data can be given as arrays or as functions that produce them when the file is written, so a long morph-target
animation is never held in memory whole.
"""
from __future__ import annotations

import json
import struct
from typing import Callable

import numpy as np

from ..atomic_file import atomic_output

GLB_MAGIC, GLB_VERSION = 0x46546C67, 2
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
COMPONENT_TYPES = {np.dtype("<f4"): 5126, np.dtype("<u4"): 5125, np.dtype("<u2"): 5123, np.dtype("<u1"): 5121}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
MAX_GLB_BYTES = 2 ** 32 - 1


def _padded(n: int) -> int:
    return (n + 3) & ~3


class GlbWriter:
    """Collects accessors into `self.gltf` (a glTF JSON dict the caller completes with meshes, nodes, ...) and
    writes the .glb."""

    def __init__(self, generator: str = "GVF4D Blender add-on"):
        self.gltf = {"asset": {"version": "2.0", "generator": generator}, "buffers": [], "bufferViews": [],
                     "accessors": []}
        self._parts: list[tuple[int, np.dtype, Callable[[], np.ndarray]]] = []   # (byte length, dtype, producer)
        self._size = 0

    def add(self, values: np.ndarray, accessor_type: str, target: int | None = None, bounds: bool = False) -> int:
        """An accessor over `values` ((count,) or (count, width), float32 or unsigned ints); bounds: write its
        per-component min and max (glTF requires them for POSITION). Returns the accessor index."""
        values = np.ascontiguousarray(values, dtype=np.asarray(values).dtype.newbyteorder("<"))
        extent = (values.min(0), values.max(0)) if bounds else None
        return self.add_lazy(lambda: values, len(values), values.dtype, accessor_type, target, extent)

    def add_lazy(self, produce: Callable[[], np.ndarray], count: int, dtype, accessor_type: str,
                 target: int | None = None, extent: tuple | None = None) -> int:
        """An accessor whose data `produce()` returns when the file is written ((count, width) of dtype);
        extent: (min, max) per component, or None."""
        dtype = np.dtype(dtype).newbyteorder("<")
        nbytes = count * WIDTHS[accessor_type] * dtype.itemsize
        view = {"buffer": 0, "byteOffset": self._size, "byteLength": nbytes}
        if target is not None:
            view["target"] = target
        self.gltf["bufferViews"].append(view)
        self._parts.append((nbytes, dtype, produce))
        self._size += _padded(nbytes)
        accessor = {"bufferView": len(self.gltf["bufferViews"]) - 1, "componentType": COMPONENT_TYPES[dtype],
                    "count": count, "type": accessor_type}
        return self._append_accessor(accessor, extent)

    def add_zeros(self, count: int, accessor_type: str, bounds: bool = False) -> int:
        """A float accessor of zeros with no buffer view (glTF reads such an accessor as zeros)."""
        accessor = {"componentType": COMPONENT_TYPES[np.dtype("<f4")], "count": count, "type": accessor_type}
        zeros = np.zeros(WIDTHS[accessor_type])
        return self._append_accessor(accessor, (zeros, zeros) if bounds else None)

    def _append_accessor(self, accessor: dict, extent) -> int:
        if extent is not None:
            accessor["min"], accessor["max"] = (np.atleast_1d(e).astype(float).tolist() for e in extent)
        self.gltf["accessors"].append(accessor)
        return len(self.gltf["accessors"]) - 1

    def write(self, path) -> str:
        """Writes the .glb: header, JSON chunk, binary chunk (each part padded to 4 bytes); at least one
        accessor must hold data."""
        self.gltf["buffers"] = [{"byteLength": self._size}]
        text = json.dumps(self.gltf, separators=(",", ":")).encode("utf-8")
        text += b" " * (_padded(len(text)) - len(text))
        total = 12 + 8 + len(text) + 8 + self._size
        if total > MAX_GLB_BYTES:
            raise ValueError(f"{path}: the export would be {total / 2 ** 30:.1f} GiB, over glTF's 4 GiB limit "
                             "for a .glb")
        with atomic_output(path) as f:
            f.write(struct.pack("<III", GLB_MAGIC, GLB_VERSION, total))
            f.write(struct.pack("<II", len(text), CHUNK_JSON) + text)
            f.write(struct.pack("<II", self._size, CHUNK_BIN))
            for nbytes, dtype, produce in self._parts:
                data = np.ascontiguousarray(produce(), dtype=dtype)
                if data.nbytes != nbytes:
                    raise ValueError(f"glTF accessor data of {data.nbytes} bytes where {nbytes} were announced")
                f.write(data.tobytes())
                f.write(b"\0" * (_padded(nbytes) - nbytes))
        return str(path)
