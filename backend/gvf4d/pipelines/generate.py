"""Footage -> .gvf4d: ingestion, the canonical splat, an engine, the result file."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..canonical import load_splat_canonical
from ..footage import MattingOptions, prepare_footage
from ..models.dinov2_features import DinoV2Features
from ..models.weights import WeightsError
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS
from ..representations.gvf_gaussians import GVFGaussians
from ..result import write_result
from .gvf import GVFEngine, GVFSettings

Progress = Callable[[str, float], None]


@dataclass
class GenerateRequest:
    footage: Path
    out: Path
    canonical: tuple[str, Optional[Path]]          # ("splat", path) | ("mesh", path) | ("trellis", None)
    engine: str = "gvf"
    weights: Optional[Path] = None
    frames: int = 32
    start: int = 0
    end: Optional[int] = None
    stride: int = 1
    matte: str = "auto"
    fps: Optional[float] = None
    device: str = "auto"
    gvf: GVFSettings = field(default_factory=GVFSettings)


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def generate(req: GenerateRequest, progress: Optional[Progress] = None) -> Path:
    timings: dict[str, float] = {}
    device = _device(req.device)
    t0 = time.perf_counter()
    prepared = prepare_footage(req.footage, req.start, req.end, req.stride, req.frames,
                               MattingOptions.parse(req.matte, req.weights), req.fps,
                               progress=(lambda f: progress("ingest", f)) if progress else None)
    timings["ingest"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kind, path = req.canonical
    if kind == "splat":
        canonical, normalisation = load_splat_canonical(path)
    else:
        raise ValueError(f"canonical source {kind!r} is not available yet: use --canonical splat PATH.ply")
    timings["canonical"] = time.perf_counter() - t0

    if req.engine != "gvf":
        raise ValueError(f"unknown engine {req.engine!r} (available: gvf)")
    if req.weights is None:
        raise WeightsError("the gvf engine needs --weights DIR holding gvf/ (the published checkpoints) and dinov2/")
    t0 = time.perf_counter()
    engine = GVFEngine.from_folder(req.weights / "gvf", device)
    dinov2 = DinoV2Features.from_folder(req.weights / "dinov2", device)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    features = dinov2(prepared.frames)
    timings["features"] = time.perf_counter() - t0
    run = engine.run(GVFGaussians.from_gaussians(canonical), features, req.gvf, progress)
    timings.update(run.timings)

    metadata = {
        "fps": prepared.fps,
        **prepared.to_metadata(),
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0, "width": 512, "height": 512},
        "canonical": {"source": kind, "path": str(path) if path else None},
        "engine": engine.describe(req.gvf),
        "seed": req.gvf.seed,
        "sampler": {**asdict(req.gvf), "solver": "dpmsolver++", "order": 2, "network_evaluations": run.network_evaluations},
        "timings": timings,
        "coordinates": {"normalisation": normalisation.to_json()},
    }
    t0 = time.perf_counter()
    out = write_result(req.out, run.animated, metadata)
    timings["write"] = time.perf_counter() - t0
    return out
