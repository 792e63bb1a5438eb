"""Writing and reading .gvf4d files (backend side; the add-on has its own numpy-only reader with the same rules)."""
from __future__ import annotations

import json
import math
import os
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from ..atomic import atomic_output
from ..representations import AnimatedGaussians, Gaussians
from .schema import (CANONICAL_TENSORS, DTYPES, MAX_HEADER_BYTES, METADATA_KEY, SCHEMA_VERSION, TENSOR_SPECS,
                     TRACK_TENSORS, ResultFileError, check_layout, check_metadata, check_tensors, check_values,
                     check_version, is_int, metadata_object, parse_json)

ResultMetadata = dict[str, Any]
"""Free-form JSON metadata; write_result fills schema_version, frame_count, num_gaussians, values, coordinates."""

PositionStorage = Literal["auto", "absolute", "delta"]
POSITION_DELTA_ABOVE_BYTES = 64 * 1024 * 1024
"""With position_storage="auto", positions are stored as float16 deltas when the float32 track would pass this."""

COORDINATES = {
    "handedness": "right",
    "up": "+Z",
    "camera_looks_along": "+Y",
    "units": "metres",
    "origin": "object centre",
}
TRACK_DTYPES = {"scales": np.float16, "quats": np.float16, "opacities": np.float16, "sh_dc": np.float16}


_TORCH_DTYPES = {np.float32: torch.float32, np.float16: torch.float16}
_SAFETENSORS_DTYPES = {np.float32: "F32", np.float16: "F16", np.int32: "I32"}


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    """Converted on the tensor's device, then one copy to host memory in the stored dtype."""
    return np.ascontiguousarray(t.detach().to(_TORCH_DTYPES[dtype]).cpu().numpy())


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """The safetensors layout (u64 header size, JSON header padded to 8 bytes, tensors back to back in name order),
    streamed array by array rather than assembled in one buffer first: a 200k-Gaussian, 32-frame result is
    ~170 MB."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    names = sorted(arrays)
    for name in names:
        a = arrays[name]
        header[name] = {"dtype": _SAFETENSORS_DTYPES[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for name in names:
            f.write(memoryview(np.ascontiguousarray(arrays[name])).cast("B"))


def _positions(animated: AnimatedGaussians, storage: PositionStorage) -> tuple[str, np.ndarray]:
    """-> ("frames.position", (T, N, 3) float32) or ("frames.position_delta", (T, N, 3) float16 frame - canonical)."""
    if storage not in ("auto", "absolute", "delta"):
        raise ValueError(f"position_storage {storage!r}: expected 'auto', 'absolute' or 'delta'")
    if storage == "auto":
        storage = "delta" if animated.positions.numel() * 4 > POSITION_DELTA_ABOVE_BYTES else "absolute"
    if storage == "delta":
        return "frames.position_delta", _np(animated.positions - animated.canonical.means, np.float16)
    return "frames.position", _np(animated.positions, np.float32)


def _result_metadata(path: Path, metadata: ResultMetadata, dims: dict[str, int]) -> dict:
    """The metadata as readers will see it (a JSON round trip), with the keys the writer fills, checked."""
    meta = dict(metadata)
    rational = meta.get("fps_rational")
    if isinstance(rational, Fraction):
        meta["fps_rational"] = rational = [rational.numerator, rational.denominator]
    if "fps" not in meta:
        is_ratio = (isinstance(rational, (list, tuple)) and len(rational) == 2
                    and all(is_int(v) and v > 0 for v in rational))
        meta["fps"] = rational[0] / rational[1] if is_ratio else 24.0
    meta.update(schema_version=SCHEMA_VERSION, frame_count=dims["T"], num_gaussians=dims["N"], values="activated",
                coordinates={**COORDINATES, **(meta.get("coordinates") or {})})
    try:
        meta = json.loads(json.dumps(meta, allow_nan=False))
    except ValueError as e:
        raise ResultFileError(path, f"metadata holds a number JSON cannot store ({e})") from None
    check_metadata(path, meta, dims)
    return meta


def write_result(path: str | os.PathLike, animated: AnimatedGaussians, metadata: ResultMetadata,
                 mesh: Optional[dict[str, torch.Tensor]] = None, position_storage: PositionStorage = "auto") -> Path:
    """Writes schema version 2 atomically (temp file in the same folder, then rename): a reader never sees half a file.

    metadata: free-form JSON; `fps` (default 24, or the ratio of `fps_rational`), optional `fps_rational`
    [num, den] (or a Fraction) for rates such as 24000/1001, `footage` with `frame_indices`.
    mesh: optional {"vertices" (V, 3), "faces" (F, 3) int, "colors" (V, 3), "frames" (T, V, 3)}.
    position_storage: "auto" (float16 deltas from the canonical when the float32 track would pass 64 MiB, else
    float32 positions), or "absolute" / "delta" to choose.
    Refuses (ResultFileError, nothing written) non-finite values as stored, fps that is not finite and > 0, and
    metadata the readers would reject.
    """
    path = Path(path)
    c = animated.canonical
    tensors: dict[str, np.ndarray] = {}
    for attr, name in CANONICAL_TENSORS.items():
        v = getattr(c, attr)
        if v is not None:
            tensors[name] = _np(v, np.float16 if attr == "sh_rest" else np.float32)
    name, positions = _positions(animated, position_storage)
    tensors[name] = positions
    for attr, dtype in TRACK_DTYPES.items():
        v = getattr(animated, attr)
        if v is not None:
            tensors[TRACK_TENSORS[attr]] = _np(v, dtype)
    if mesh is not None:
        tensors["mesh.vertices"] = _np(mesh["vertices"], np.float32)
        tensors["mesh.faces"] = np.ascontiguousarray(mesh["faces"].cpu().numpy().astype(np.int32))
        tensors["mesh.colors"] = _np(mesh["colors"], np.float32)
        tensors["frames.mesh_vertices"] = _np(mesh["frames"], np.float32)
    dims = check_tensors(path, {k: v.shape for k, v in tensors.items()}, SCHEMA_VERSION)
    for name, values in tensors.items():
        if TENSOR_SPECS[name].dims[0] == "T":
            for t in range(dims["T"]):
                check_values(path, name, values[t], dims, t)
        else:
            check_values(path, name, values, dims)
    meta = _result_metadata(path, metadata, dims)
    with atomic_output(path) as tmp:
        write_safetensors(tmp, tensors, {METADATA_KEY: json.dumps(meta)})
    return path


def _read_header(path: Path) -> tuple[str, int, int]:
    """-> (header text, offset of the data section, its size in bytes)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ResultFileError(path, "is not a regular file")
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ResultFileError(path, f"too short to be a .gvf4d file ({st.st_size} bytes)")
            n = int.from_bytes(head, "little")
            if n < 2 or n > st.st_size - 8:
                raise ResultFileError(path, f"header length {n} does not fit the file size {st.st_size} "
                                            "(truncated or not a .gvf4d file)")
            if n > MAX_HEADER_BYTES:
                raise ResultFileError(path, f"header length {n} is over the limit of {MAX_HEADER_BYTES} bytes")
            raw = f.read(n)
    except OSError as e:
        raise ResultFileError(path, f"cannot be read ({e.strerror or e})") from None
    if len(raw) != n:
        raise ResultFileError(path, "changed while being read")
    try:
        return raw.decode("utf-8"), 8 + n, st.st_size - 8 - n
    except UnicodeDecodeError as e:
        raise ResultFileError(path, f"header is not UTF-8 ({e.reason} at byte {e.start})") from None


class ResultFile:
    """A validated .gvf4d file (schema 1 or 2): header, layout, shapes and metadata checked at open without reading
    tensor data; values checked as they are read. Tensors are memory-mapped; frame(name, t) reads one frame.
    frames.position reads as absolute float32 positions whichever way the file stores them."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        text, self._data_start, data_size = _read_header(self.path)
        header = parse_json(self.path, text, "header")
        if not isinstance(header, dict):
            raise ResultFileError(self.path, "header is not a JSON object")
        meta = metadata_object(self.path, header.get("__metadata__"))
        version = check_version(self.path, meta)
        self._entries = check_layout(self.path, header, data_size, version)
        self.dims = check_tensors(self.path, {k: shape for k, (_, shape, _) in self._entries.items()}, version)
        check_metadata(self.path, meta, self.dims)
        self.metadata = meta
        self.names = set(self._entries)   # as stored: frames.position_delta where positions are deltas
        self._maps: dict[str, np.ndarray] = {}
        self._checked: set[str] = set()

    @property
    def num_frames(self) -> int:
        return self.dims["T"]

    @property
    def num_gaussians(self) -> int:
        return self.dims["N"]

    def has(self, name: str) -> bool:
        return name in self._entries or (name == "frames.position" and "frames.position_delta" in self._entries)

    def _map(self, name: str) -> np.ndarray:
        """The stored tensor, memory-mapped read-only, values unchecked."""
        if name not in self._maps:
            dtype, shape, begin = self._entries[name]
            if math.prod(shape) == 0:
                self._maps[name] = np.zeros(shape, DTYPES[dtype])
            else:
                self._maps[name] = np.memmap(self.path, dtype=DTYPES[dtype], mode="r",
                                             offset=self._data_start + begin, shape=shape)
        return self._maps[name]

    def _stored_frame(self, name: str, t: int) -> np.ndarray:
        values = np.array(self._map(name)[t], dtype=np.float32)   # a writable copy, whatever the stored dtype
        check_values(self.path, name, values, self.dims, t)
        return values

    def array(self, name: str) -> np.ndarray:
        """The whole tensor, its values checked: the stored tensor memory-mapped read-only, or for frames.position
        stored as deltas, the absolute positions (T, N, 3) float32."""
        if not self.has(name):
            raise KeyError(f"{self.path}: no tensor {name}")
        if name not in self._entries:
            return np.stack([self.frame(name, t) for t in range(self.num_frames)])
        values = self._map(name)
        if name not in self._checked:
            if TENSOR_SPECS[name].dims[0] == "T":
                for t in range(self.num_frames):
                    self._stored_frame(name, t)
            else:
                check_values(self.path, name, values, self.dims)
            self._checked.add(name)
        return values

    def frame(self, name: str, t: int) -> np.ndarray:
        """Frame t of a (T, ...) track as a new float32 array, reading only that frame; NaN or Inf there is a
        ResultFileError."""
        if not self.has(name) or not name.startswith("frames."):
            raise KeyError(f"{self.path}: no track {name}")
        if not 0 <= t < self.num_frames:
            raise IndexError(f"{self.path}: frame {t} outside 0..{self.num_frames - 1}")
        if name == "frames.position" and name not in self._entries:
            return self.array("canonical.position") + self._stored_frame("frames.position_delta", t)
        return self._stored_frame(name, t)

    def _torch(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array(name), dtype=np.float32))

    def canonical(self) -> Gaussians:
        return Gaussians(**{attr: self._torch(name) for attr, name in CANONICAL_TENSORS.items() if self.has(name)})

    def animated(self) -> AnimatedGaussians:
        """Every frame in memory, float32."""
        return AnimatedGaussians(canonical=self.canonical(),
                                 **{attr: self._torch(name) for attr, name in TRACK_TENSORS.items() if self.has(name)})

    def mesh(self) -> Optional[dict[str, np.ndarray]]:
        if not self.has("mesh.vertices"):
            return None
        return {"vertices": self.array("mesh.vertices"), "faces": self.array("mesh.faces"),
                "colors": self.array("mesh.colors"), "frames": self.array("frames.mesh_vertices")}


def read_result(path: str | os.PathLike) -> tuple[AnimatedGaussians, dict]:
    """The whole result in memory (values checked) and its metadata."""
    f = ResultFile(path)
    return f.animated(), f.metadata
