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

from ..canonical import Normalisation, load_mesh_canonical, load_splat_canonical
from ..canonical.align import SilhouetteAlignment, align_to_footage, align_to_silhouette
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
CANONICAL_SOURCES = ("trellis", "mesh", "splat")
EXPORTS = ("ply", "glb", "preview")


@dataclass
class GenerateRequest:
    footage: Path
    out: Path
    canonical: tuple[str, Optional[Path]]          # ("trellis", None) | ("mesh", path) | ("splat", path)
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
    azimuth_step: Optional[float] = None            # search the canonical's facing in steps of this (0: off;
                                                    # None: 1 degree for trellis as published, off for the artist's asset)
    mesh: bool = False                              # extract a mesh and its per-frame deformation into the result
    mesh_faces: int = 20_000
    mesh_samples: int = 100_000                     # Gaussians sampled on an artist's mesh
    exports: tuple[str, ...] = ()

    def __post_init__(self):
        self.gvf = self.gvf or GVFSettings()
        kind, path = self.canonical
        if kind not in CANONICAL_SOURCES:
            raise ValueError(f"unknown canonical source {kind!r} (available: {', '.join(CANONICAL_SOURCES)})")
        if kind != "trellis" and path is None:
            raise ValueError(f"--canonical {kind} needs a file: --canonical {kind} PATH")
        if self.azimuth_step is None:
            self.azimuth_step = 1.0 if kind == "trellis" else 0.0
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
            elif kind == "clip":
                from ..canonical.azimuth import ClipScorer
                self._models[key] = ClipScorer.from_folder(folder, device)
            elif kind == "trellis":
                from .trellis import TrellisImageTo3D
                encoder = self.get("dinov2", folder / "dinov2", device)
                self._models[key] = TrellisImageTo3D.from_folders(folder / "trellis", folder / "gvf", encoder, device)
            else:
                from ..models.dinov2_features import DinoV2Features
                # half precision on CUDA (the features are stored in fp16 as published; computed in fp32 there)
                dtype = torch.float16 if device.type == "cuda" else torch.float32
                self._models[key] = DinoV2Features.from_folder(folder, device, dtype)
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


def _canonical_source_hash(req: GenerateRequest, ingest_key: str) -> tuple:
    kind, path = req.canonical
    if kind != "trellis":
        return (sha256_file(path), req.mesh_samples if kind == "mesh" else None)
    if req.weights is None:
        raise WeightsError("--canonical trellis needs --weights DIR holding trellis/ (TRELLIS-image-large), "
                           "gvf/ema_static_vae_0.9999_200000.pt and dinov2/")
    pipeline_json = req.weights / "trellis" / "pipeline.json"
    return (ingest_key, req.gvf.seed, sha256_file(pipeline_json) if pipeline_json.is_file() else None)


def _canonical(req: GenerateRequest, prepared: PreparedFootage, ingest_key: str, cache: StageCache, reused: list,
               models: LoadedModels, device: torch.device, progress):
    """-> canonical Gaussians (normalised), their normalisation, the stage key, metadata about the source."""
    kind, path = req.canonical
    key = stage_key("canonical", kind, *_canonical_source_hash(req, ingest_key))
    hit = cache.get("canonical", key)
    if hit:
        reused.append("canonical")
        record = json.loads((hit / "canonical.json").read_text())
        n = record["normalisation"]
        return read_splat_ply(hit / "canonical.ply"), Normalisation(tuple(n["centre"]), n["scale"]), key, record["source"]
    source: dict = {"source": kind, "path": str(path) if path else None}
    if kind == "splat":
        g, norm = load_splat_canonical(path)
    elif kind == "mesh":
        g, norm = load_mesh_canonical(path, req.mesh_samples, seed=req.gvf.seed)
        source["samples"] = req.mesh_samples
    else:
        from .trellis import trellis_input_image
        trellis = models.get("trellis", req.weights, device)
        out = trellis.run(trellis_input_image(prepared.frames[0], prepared.alphas[0]), req.gvf.seed, progress)
        g, norm = out.gaussians.to_gaussians().to("cpu"), Normalisation((0.0, 0.0, 0.0), 1.0)
        source.update(voxels=out.voxels, gaussians=len(g), seed=req.gvf.seed, timings=out.timings,
                      checkpoints=trellis.sources, frame_index=prepared.frame_indices[0])
    record = {"normalisation": norm.to_json(), "source": source}

    def write(d: Path):
        write_splat_ply(d / "canonical.ply", g)
        (d / "canonical.json").write_text(json.dumps(record))
    cache.put("canonical", key, write)
    return g, norm, key, source


def _facing(req: GenerateRequest, canonical, frames, alphas, canonical_key: str, ingest_key: str, cache: StageCache,
            reused: list, models: "LoadedModels", device: torch.device) -> dict:
    """The published azimuth search (cached): the canonical's rotation about +Z that best matches the first frame,
    scored with CLIP ViT-B/32 when <weights>/clip/ holds it, else by silhouette IoU + colour.
    -> {"azimuth_deg", "scorer", "step_deg"}."""
    if req.azimuth_step <= 0:
        return {"azimuth_deg": 0.0, "scorer": None, "step_deg": 0.0}
    clip_folder = req.weights / "clip" if req.weights is not None else None
    use_clip = clip_folder is not None and (clip_folder / "config.json").is_file()
    key = stage_key("facing", ingest_key, canonical_key, req.azimuth_step,
                    sha256_file(clip_folder / "config.json") if use_clip else None)
    hit = cache.get("facing", key)
    if hit:
        reused.append("facing")
        return json.loads((hit / "facing.json").read_text())
    steps = np.arange(-180.0, 180.0, req.azimuth_step).tolist()
    clip = models.get("clip", clip_folder, device) if use_clip else None
    found = search_azimuth(canonical.to(device), frames[0].to(device), alphas[0].to(device), steps, clip=clip)
    record = {"azimuth_deg": found.azimuth_deg, "scorer": found.scorer, "step_deg": req.azimuth_step}
    cache.put("facing", key, lambda d: (d / "facing.json").write_text(json.dumps(record)))
    return record


def _mesh(animated, req: GenerateRequest) -> dict:
    from ..mesh_extraction import deform_vertices, extract_mesh
    m = extract_mesh(animated.canonical.to("cpu"), target_faces=req.mesh_faces)
    frames = deform_vertices(m.vertices, animated.to("cpu"))
    return {"vertices": torch.from_numpy(m.vertices), "faces": torch.from_numpy(m.faces),
            "colors": torch.from_numpy(m.colors), "frames": frames}


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
    canonical, normalisation, canonical_key, meta_canonical = _canonical(req, prepared, ingest_key, cache, reused,
                                                                         models, device, progress)
    lap("canonical")
    frames, alphas = prepared.tensors(req.fit_size)
    facing = _facing(req, canonical, frames, alphas, canonical_key, ingest_key, cache, reused, models, device)
    azimuth = facing["azimuth_deg"]
    canonical = rotate_about_z(canonical, -azimuth)
    meta_canonical["facing"] = {**facing, "applied": "rotation about +Z by -azimuth, before any scale and offset"}
    lap("facing")

    if req.engine == "fit":
        camera = footage_camera(req.fit_size, req.fit_size)
        key = stage_key("align", ingest_key, canonical_key, req.fit_size, azimuth)
        hit = cache.get("align", key)
        if hit:
            reused.append("align")
            a = json.loads((hit / "alignment.json").read_text())
            alignment = SilhouetteAlignment(a["scale"], tuple(a["offset"]))
        else:
            alignment = align_to_footage(canonical, frames[0], alphas[0], camera)
            record = alignment.to_json()
            cache.put("align", key, lambda d: (d / "alignment.json").write_text(json.dumps(record)))
        meta_canonical["alignment"] = {**alignment.to_json(), "azimuth_deg": azimuth}
        lap("align")
        animated = fit_variation_field(alignment.apply(canonical), frames, alphas, camera, req.fit,
                                       progress, should_cancel)
        lap("fit")
        engine_meta = {"name": "fit", "checkpoints": [], "settings": asdict(req.fit), "fit_size": req.fit_size}
        sampler_meta = None
    else:
        if req.weights is None:
            raise WeightsError("the gvf engine needs --weights DIR holding gvf/ (the published checkpoints) and dinov2/")
        # the published render-time factor: recorded (what would frame renders of the result like the footage),
        # not applied — the model's canonical space is kept; --refine applies an alignment instead
        seen = align_to_silhouette(canonical.to(device), alphas[0].to(device), footage_camera(req.fit_size, req.fit_size))
        meta_canonical["alignment"] = {**seen.to_json(), "applied": False,
                                       "use": "scale and offset that make renders match the first frame's silhouette"}
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
            camera = footage_camera(req.fit_size, req.fit_size).to(device)
            alignment = align_to_footage(canonical.to(device), frames[0].to(device), alphas[0].to(device), camera)
            off = torch.tensor(alignment.offset, device=device)
            aligned = map_points(animated, lambda p: p * alignment.scale + off, alignment.scale)
            settings = replace(req.fit, iterations_first=req.refine, iterations=req.refine)
            animated = fit_variation_field(aligned.canonical, frames, alphas, camera, settings, progress,
                                           should_cancel, init=aligned)
            meta_canonical["alignment"] = {**alignment.to_json(), "applied": True}
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
    mesh = None
    if req.mesh:
        mesh = _mesh(animated, req)
        metadata["mesh"] = {"method": "marching cubes on the splat density, pymeshlab clean + quadric decimation",
                            "target_faces": req.mesh_faces, "faces": int(mesh["faces"].shape[0]),
                            "deformation": "8 nearest Gaussians, weights opacity/distance, rigid per Gaussian"}
        lap("mesh")
        metadata["timings"] = dict(timings)
    out = write_result(req.out, animated, metadata, mesh)
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
