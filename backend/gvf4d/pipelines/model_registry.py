"""The networks kept loaded between jobs: the warm state the service worker, the CLI and workers share."""
from __future__ import annotations

import gc
from pathlib import Path

import torch

MODEL_KINDS = ("gvf", "dinov2", "trellis", "clip")


def release_gpu_memory() -> None:
    """Collect what no longer has a reference and hand the CUDA allocator's cached blocks back to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelRegistry:
    """Loaded networks keyed by (kind, folder, device); each is loaded on first use and kept until `unload()`.

    Kinds: "gvf" (GVFEngine from <weights>/gvf), "dinov2" (DinoV2Features from <weights>/dinov2), "trellis"
    (TrellisImageTo3D from <weights>, sharing the "dinov2" entry of <weights>/dinov2), "clip" (ClipScorer from
    <weights>/clip).
    """

    def __init__(self):
        self._models: dict[tuple[str, str, str], object] = {}

    def get(self, kind: str, folder: Path, device: torch.device):
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r} (available: {', '.join(MODEL_KINDS)})")
        key = (kind, str(folder), str(device))
        if key not in self._models:
            self._models[key] = self._load(kind, Path(folder), device)
        return self._models[key]

    def _load(self, kind: str, folder: Path, device: torch.device):
        if kind == "gvf":
            from .gvf import GVFEngine
            return GVFEngine.from_folder(folder, device)
        if kind == "clip":
            from ..canonical.azimuth import ClipScorer
            return ClipScorer.from_folder(folder, device)
        if kind == "trellis":
            from .trellis import TrellisImageTo3D
            encoder = self.get("dinov2", folder / "dinov2", device)
            return TrellisImageTo3D.from_folders(folder / "trellis", folder / "gvf", encoder, device)
        from ..models.dinov2_features import DinoV2Features
        # half precision on CUDA (the features are stored in fp16 as published; computed in fp32 there)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        return DinoV2Features.from_folder(folder, device, dtype)

    @property
    def loaded(self) -> list[tuple[str, str, str]]:
        """The (kind, folder, device) of every network held now."""
        return list(self._models)

    def unload(self) -> None:
        """Drop every loaded network and free the GPU memory it held; a later `get` loads again."""
        self._models.clear()
        release_gpu_memory()
