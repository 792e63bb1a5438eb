"""Footage -> .gvf4d: ingestion, the canonical splat, an engine (fit or gvf), the result file and exports.

Stages and what a rerun reuses (with a StageCache): ingest (footage + frame selection + matting), canonical
(the splat file), align (fit engine), features (gvf engine). The engine itself always runs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..canonical import Normalisation, load_splat_canonical
from ..canonical.align import SilhouetteAlignment, align_to_footage
from ..canonical.azimuth import rotate_about_z, search_azimuth
from ..engines.fit import FitSettings, fit_variation_field
from ..evaluation import map_points
from ..exporters import read_splat_ply, write_ply_frames, write_points_glb, write_preview_video, write_splat_ply
from ..footage import MattingOptions, PreparedFootage, prepare_footage
from ..models.weights import WeightsError, sha256_file
from ..progress import Progress, ShouldCancel, StageClock, check_cancel
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS, footage_camera
from ..representations.gvf_gaussians import GVFGaussians
from ..result import write_result
from .gvf import GVFSettings
from .stage_cache import StageCache, stage_key

ENGINES = ("fit", "gvf")
EXPORTS = ("ply", "glb", "preview")


@dataclass
class GenerateRequest:
    footage: Path
    out: Path
    canonical: tuple[str, Optional[Path]]          # ("splat", path); other sources arrive with the canonical stage
    engine: str = "fit"
    weights: Optional[Path] = None
    frames: int = 32
    start: int = 0
    end: Optional[int] = None
    stride: int = 1
    matte: str = "auto"
    fps: Optional[float] = None
    device: str = "auto"
    fit_size: int = 128
    fit: FitSettings = field(default_factory=FitSettings)
    gvf: Optional[GVFSettings] = None
    refine: int = 0                                 # gvf engine: fit steps per frame refining its result (0: off)
    azimuth_step: float = 0.0                       # fit engine: search the splat's facing in steps of this (0: off)
    exports: tuple[str, ...] = ()

    def __post_init__(self):
        self.gvf = self.gvf or GVFSettings()
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r} (available: {', '.join(ENGINES)})")
        bad = [e for e in self.exports if e not in EXPORTS]
        if bad:
            raise ValueError(f"unknown exports {bad} (available: {', '.join(EXPORTS)})")


@dataclass
class GenerateOutcome:
    result: Path
    files: list[Path]
    reused: list[str]
    timings: dict[str, float]


class LoadedModels:
    """Models kept loaded between jobs (the service's warm state), keyed by weights folder and device."""

    def __init__(self):
        self._models: dict = {}

    def get(self, kind: str, folder: Path, device: torch.device):
        key = (kind, str(folder), str(device))
        if key not in self._models:
            if kind == "gvf":
                from .gvf import GVFEngine
                self._models[key] = GVFEngine.from_folder(folder, device)
            else:
                from ..models.dinov2_features import DinoV2Features
                self._models[key] = DinoV2Features.from_folder(folder, device)
        return self._models[key]


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def _ingest(req: GenerateRequest, cache: StageCache, reused: list, progress) -> tuple[PreparedFootage, str]:
    from ..footage import open_footage
    source = open_footage(req.footage, req.fps)
    key = stage_key("ingest", source.content_hash(), req.start, req.end, req.stride, req.frames, req.matte, req.fps)
    hit = cache.get("ingest", key)
    if hit:
        reused.append("ingest")
        return PreparedFootage.load(hit), key
    prepared = prepare_footage(req.footage, req.start, req.end, req.stride, req.frames,
                               MattingOptions.parse(req.matte, req.weights), req.fps,
                               progress=(lambda f: progress("ingest", f)) if progress else None)
    cache.put("ingest", key, prepared.save)
    return prepared, key


def _canonical(req: GenerateRequest, cache: StageCache, reused: list):
    kind, path = req.canonical
    if kind != "splat" or path is None:
        raise ValueError(f"canonical source {kind!r} is not available yet: use --canonical splat PATH.ply")
    key = stage_key("canonical", kind, sha256_file(path))
    hit = cache.get("canonical", key)
    if hit:
        reused.append("canonical")
        n = json.loads((hit / "normalisation.json").read_text())
        return read_splat_ply(hit / "canonical.ply"), Normalisation(tuple(n["centre"]), n["scale"]), key
    g, norm = load_splat_canonical(path)

    def write(d: Path):
        write_splat_ply(d / "canonical.ply", g)
        (d / "normalisation.json").write_text(json.dumps(norm.to_json()))
    cache.put("canonical", key, write)
    return g, norm, key


def generate(req: GenerateRequest, progress: Optional[Progress] = None, should_cancel: Optional[ShouldCancel] = None,
             cache: Optional[StageCache] = None, models: Optional[LoadedModels] = None) -> GenerateOutcome:
    cache = cache or StageCache(None)
    models = models or LoadedModels()
    reused: list[str] = []
    device = _device(req.device)
    clock = StageClock()
    timings = clock.timings

    def lap(name):
        clock.lap(name)
        check_cancel(should_cancel)

    prepared, ingest_key = _ingest(req, cache, reused, progress)
    lap("ingest")
    canonical, normalisation, canonical_key = _canonical(req, cache, reused)
    lap("canonical")
    meta_canonical = {"source": req.canonical[0], "path": str(req.canonical[1])}

    if req.engine == "fit":
        frames, alphas = prepared.tensors(req.fit_size)
        camera = footage_camera(req.fit_size, req.fit_size)
        key = stage_key("align", ingest_key, canonical_key, req.fit_size, req.azimuth_step)
        hit = cache.get("align", key)
        if hit:
            reused.append("align")
            a = json.loads((hit / "alignment.json").read_text())
            azimuth, alignment = a["azimuth_deg"], SilhouetteAlignment(a["scale"], tuple(a["offset"]))
            canonical = rotate_about_z(canonical, -azimuth)
        else:
            azimuth = 0.0
            if req.azimuth_step > 0:
                steps = np.arange(-180.0, 180.0, req.azimuth_step).tolist()
                azimuth = search_azimuth(canonical.to(device), frames[0], alphas[0], steps).azimuth_deg
                canonical = rotate_about_z(canonical, -azimuth)
            alignment = align_to_footage(canonical, frames[0], alphas[0], camera)
            record = {**alignment.to_json(), "azimuth_deg": azimuth}
            cache.put("align", key, lambda d: (d / "alignment.json").write_text(json.dumps(record)))
        meta_canonical["alignment"] = {**alignment.to_json(), "azimuth_deg": azimuth,
                                       "azimuth_applied": "rotation about +Z by -azimuth, before scale and offset"}
        lap("align")
        animated = fit_variation_field(alignment.apply(canonical), frames, alphas, camera, req.fit,
                                       progress, should_cancel)
        lap("fit")
        engine_meta = {"name": "fit", "checkpoints": [], "settings": asdict(req.fit), "fit_size": req.fit_size}
        sampler_meta = None
    else:
        if req.weights is None:
            raise WeightsError("the gvf engine needs --weights DIR holding gvf/ (the published checkpoints) and dinov2/")
        engine = models.get("gvf", req.weights / "gvf", device)
        dinov2 = models.get("dinov2", req.weights / "dinov2", device)
        lap("load")
        key = stage_key("features", ingest_key, sha256_file(req.weights / "dinov2" / "config.json"))
        hit = cache.get("features", key)
        if hit:
            reused.append("features")
            features = torch.load(hit / "features.pt", weights_only=True)
        else:
            features = dinov2(prepared.frames).half()
            cache.put("features", key, lambda d: torch.save(features, d / "features.pt"))
        lap("features")
        run = engine.run(GVFGaussians.from_gaussians(canonical), features.float(), req.gvf, progress)
        timings.update(run.timings)
        animated = run.animated
        clock.restart()
        engine_meta = engine.describe()
        if req.refine > 0:
            frames, alphas = prepared.tensors(req.fit_size)
            camera = footage_camera(req.fit_size, req.fit_size).to(device)
            alignment = align_to_footage(canonical.to(device), frames[0].to(device), alphas[0].to(device), camera)
            off = torch.tensor(alignment.offset, device=device)
            aligned = map_points(animated, lambda p: p * alignment.scale + off, alignment.scale)
            settings = replace(req.fit, iterations_first=req.refine, iterations=req.refine)
            animated = fit_variation_field(aligned.canonical, frames, alphas, camera, settings, progress,
                                           should_cancel, init=aligned)
            meta_canonical["alignment"] = alignment.to_json()
            engine_meta["refine"] = {"iterations_per_frame": req.refine, "fit_size": req.fit_size,
                                     "settings": asdict(settings)}
            lap("refine")
        sampler_meta = {**asdict(req.gvf), "solver": "dpmsolver++", "order": 2,
                        "network_evaluations": run.network_evaluations}
    metadata = {
        "fps": prepared.fps,
        **prepared.to_metadata(),
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0},
        "canonical": meta_canonical,
        "engine": engine_meta,
        "seed": req.gvf.seed if req.engine == "gvf" else None,
        "sampler": sampler_meta,
        "timings": dict(timings),
        "reused_stages": list(reused),
        "coordinates": {"normalisation": normalisation.to_json()},
    }
    out = write_result(req.out, animated, metadata)
    files = [out]
    lap("write")
    if "ply" in req.exports:
        files += write_ply_frames(out.parent / f"{out.stem}_ply", animated)
    if "glb" in req.exports:
        files.append(write_points_glb(out.with_suffix(".glb"), animated, prepared.fps))
    if "preview" in req.exports:
        files.append(write_preview_video(out.with_name(out.stem + "_preview.mp4"), animated, prepared.fps))
    if req.exports:
        lap("export")
    return GenerateOutcome(out, files, reused, timings)
