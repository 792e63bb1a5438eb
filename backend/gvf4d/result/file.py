"""Writing and reading .gvf4d files (backend side; the add-on has its own numpy-only reader)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..atomic import atomic_output
from ..representations import AnimatedGaussians, Gaussians
from .schema import (CANONICAL_TENSORS, METADATA_KEY, SCHEMA_VERSION, TRACK_TENSORS, ResultFileError,
                     check_shapes)

ResultMetadata = dict[str, Any]
"""Free-form JSON metadata; write_result fills schema_version, frame_count, num_gaussians, values, coordinates."""

COORDINATES = {
    "handedness": "right",
    "up": "+Z",
    "camera_looks_along": "+Y",
    "units": "metres",
    "origin": "object centre",
}
TRACK_DTYPES = {"positions": np.float32, "scales": np.float16, "quats": np.float16,
                "opacities": np.float16, "sh_dc": np.float16}


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


def write_result(path: str | os.PathLike, animated: AnimatedGaussians, metadata: ResultMetadata,
                 mesh: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Writes atomically (temp file in the same folder, then rename): a reader never sees half a file.

    mesh: optional {"vertices" (V, 3), "faces" (F, 3) int, "colors" (V, 3), "frames" (T, V, 3)}.
    """
    path = Path(path)
    c = animated.canonical
    tensors: dict[str, np.ndarray] = {}
    for attr, name in CANONICAL_TENSORS.items():
        v = getattr(c, attr)
        if v is not None:
            tensors[name] = _np(v, np.float16 if attr == "sh_rest" else np.float32)
    for attr, name in TRACK_TENSORS.items():
        v = getattr(animated, attr)
        if v is not None:
            tensors[name] = _np(v, TRACK_DTYPES[attr])
    if mesh is not None:
        tensors["mesh.vertices"] = _np(mesh["vertices"], np.float32)
        tensors["mesh.faces"] = np.ascontiguousarray(mesh["faces"].cpu().numpy().astype(np.int32))
        tensors["mesh.colors"] = _np(mesh["colors"], np.float32)
        tensors["frames.mesh_vertices"] = _np(mesh["frames"], np.float32)
    check_shapes(path, {k: v.shape for k, v in tensors.items()},
                 {k: _SAFETENSORS_DTYPES[v.dtype.type] for k, v in tensors.items()})
    meta = dict(metadata)
    meta.update(schema_version=SCHEMA_VERSION, frame_count=animated.num_frames, num_gaussians=len(c),
                values="activated", coordinates={**COORDINATES, **meta.get("coordinates", {})})
    meta.setdefault("fps", 24.0)
    with atomic_output(path) as tmp:
        write_safetensors(tmp, tensors, {METADATA_KEY: json.dumps(meta)})
    return path


class ResultFile:
    """A validated, lazily read .gvf4d file. Tensors are read on demand; frame(t) reads one frame."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ResultFileError(self.path, "no such file")
        try:
            self._f = safe_open(str(self.path), framework="np")
            raw_meta = self._f.metadata() or {}
            names = list(self._f.keys())
            shapes = {k: tuple(self._f.get_slice(k).get_shape()) for k in names}
            dtypes = {k: self._f.get_slice(k).get_dtype() for k in names}
        except (SafetensorError, OSError, ValueError, OverflowError) as e:
            raise ResultFileError(self.path, f"not a readable .gvf4d (safetensors) file: {e}") from None
        self.dims = check_shapes(self.path, shapes, dtypes)
        self.metadata = self._parse_metadata(raw_meta)
        if self.metadata.get("frame_count") != self.dims["T"]:
            raise ResultFileError(self.path, f"metadata frame_count={self.metadata.get('frame_count')} but tracks have {self.dims['T']} frames")
        self.names = set(names)

    def _parse_metadata(self, raw: dict) -> dict:
        if METADATA_KEY not in raw:
            raise ResultFileError(self.path, f"no '{METADATA_KEY}' metadata in the header")
        try:
            meta = json.loads(raw[METADATA_KEY])
        except json.JSONDecodeError as e:
            raise ResultFileError(self.path, f"metadata is not valid JSON: {e}") from None
        if not isinstance(meta, dict):
            raise ResultFileError(self.path, "metadata is not a JSON object")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultFileError(self.path, f"schema version {version!r}; this gvf4d reads version {SCHEMA_VERSION}")
        fps = meta.get("fps")
        if not isinstance(fps, (int, float)) or not fps > 0:
            raise ResultFileError(self.path, f"metadata fps={fps!r} is not a positive number")
        return meta

    @property
    def num_frames(self) -> int:
        return self.dims["T"]

    @property
    def num_gaussians(self) -> int:
        return self.dims["N"]

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self._f.get_tensor(name)
        except SafetensorError as e:
            raise ResultFileError(self.path, f"cannot read tensor {name}: {e}") from None

    def frame_slice(self, name: str, t: int) -> np.ndarray:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"{self.path}: frame {t} out of range 0..{self.num_frames - 1}")
        return self._f.get_slice(name)[t]

    def canonical(self) -> Gaussians:
        kw = {attr: torch.from_numpy(self.tensor(name).astype(np.float32))
              for attr, name in CANONICAL_TENSORS.items() if name in self.names}
        return Gaussians(**kw)

    def animated(self) -> AnimatedGaussians:
        kw = {attr: torch.from_numpy(self.tensor(name).astype(np.float32))
              for attr, name in TRACK_TENSORS.items() if name in self.names}
        return AnimatedGaussians(canonical=self.canonical(), **kw)

    def mesh(self) -> Optional[dict[str, np.ndarray]]:
        if "mesh.vertices" not in self.names:
            return None
        return {"vertices": self.tensor("mesh.vertices"), "faces": self.tensor("mesh.faces"),
                "colors": self.tensor("mesh.colors"), "frames": self.tensor("frames.mesh_vertices")}

    def check_finite(self) -> None:
        """Reads every tensor once and rejects NaN/inf values."""
        for name in sorted(self.names):
            if not np.isfinite(self.tensor(name).astype(np.float32)).all():
                raise ResultFileError(self.path, f"tensor {name} holds NaN or infinite values")


def read_result(path: str | os.PathLike) -> tuple[AnimatedGaussians, dict]:
    f = ResultFile(path)
    f.check_finite()
    return f.animated(), f.metadata
