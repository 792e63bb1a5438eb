"""The stages of footage -> .gvf4d, in the order `generate()` runs them; each ends with a lap of the stage clock.

What a rerun reuses through the StageCache, keyed by the stage's inputs and settings: ingest (footage + frame
selection + matting), canonical (the splat file), facing (the azimuth search), align (fit engine), features (gvf
engine). The engines themselves always run. A canonical given exactly (`request.exact`) is used as it is: its
facing and alignment are the given ones, neither searched nor cached.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..canonical import Normalisation, load_mesh_canonical, load_splat_canonical
from ..canonical.align import SilhouetteAlignment, align_to_footage, align_to_silhouette
from ..canonical.azimuth import rotate_about_z, search_azimuth
from ..engines.fit import fit_variation_field
from ..evaluation import map_points
from ..exporters import read_splat_ply, write_ply_frames, write_points_glb, write_preview_video, write_splat_ply
from ..footage import MattingOptions, PreparedFootage, open_footage, prepare_footage
from ..models.weights import WeightsError, sha256_file
from ..progress import Progress, ShouldCancel, StageClock, check_cancel
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS, footage_camera
from ..representations import AnimatedGaussians, Gaussians
from ..representations.gvf_gaussians import GVFGaussians
from ..result import write_result
from .model_registry import ModelRegistry
from .request import GenerateRequest
from .stage_cache import StageCache, stage_key

T = TypeVar("T")


@dataclass
class StageContext:
    """What every stage shares: the request, the stage cache and the stages read from it, the loaded models, the
    device, progress and cancellation, and the clock that times the stages."""

    request: GenerateRequest
    cache: StageCache
    models: ModelRegistry
    device: torch.device
    progress: Optional[Progress] = None
    should_cancel: Optional[ShouldCancel] = None
    reused: list[str] = field(default_factory=list)
    clock: StageClock = field(default_factory=StageClock)

    def lap(self, stage: str) -> None:
        """Ends a stage: records its time, then stops the run if it was cancelled."""
        self.clock.lap(stage)
        check_cancel(self.should_cancel)

    def cached(self, stage: str, key: str, make: Callable[[], T], load: Callable[[Path], T],
               save: Callable[[T, Path], None]) -> T:
        """The stage's output: load(folder) of its cached copy under `key` (the stage counts as reused), else
        make(), stored with save(output, folder)."""
        hit = self.cache.get(stage, key)
        if hit:
            self.reused.append(stage)
            return load(hit)
        output = make()
        self.cache.put(stage, key, lambda folder: save(output, folder))
        return output


@dataclass
class Footage:
    prepared: PreparedFootage
    key: str                        # the ingest stage's cache key; the later stages' keys build on it


@dataclass
class Canonical:
    gaussians: Gaussians            # N Gaussians in normalised space; turned to face the camera by face_footage
    normalisation: Normalisation
    key: str                        # the canonical stage's cache key
    metadata: dict                  # the result's "canonical" record: the source, then "facing" and "alignment"
    azimuth_deg: float = 0.0        # the facing found: the Gaussians are turned about +Z by -azimuth_deg


@dataclass
class EngineOutput:
    animated: AnimatedGaussians     # T frames of the N canonical Gaussians
    engine: dict                    # the result's "engine" record
    sampler: Optional[dict]         # the result's "sampler" record (gvf engine; None for fit)


def ingest_footage(ctx: StageContext) -> Footage:
    """The selected frames, matted and cropped as published."""
    req = ctx.request
    source = open_footage(req.footage, req.fps)
    key = stage_key("ingest", source.content_hash(ctx.should_cancel), req.start, req.end, req.stride, req.frames, req.matte, req.fps)
    prepared = ctx.cached(
        "ingest", key,
        lambda: prepare_footage(req.footage, req.start, req.end, req.stride, req.frames,
                                MattingOptions.parse(req.matte, req.weights), req.fps,
                                progress=(lambda f: ctx.progress("ingest", f)) if ctx.progress else None),
        PreparedFootage.load, PreparedFootage.save)
    ctx.lap("ingest")
    return Footage(prepared, key)


def make_canonical(ctx: StageContext, footage: Footage) -> Canonical:
    """The canonical splat from the requested source (TRELLIS on the first frame, an artist's mesh or splat)."""
    kind = ctx.request.canonical[0]
    key = stage_key("canonical", kind, *_canonical_source_hash(ctx.request, footage.key, ctx.should_cancel))
    gaussians, normalisation, source = ctx.cached("canonical", key, lambda: _canonical_from_source(ctx, footage),
                                                  _read_canonical, _write_canonical)
    ctx.lap("canonical")
    return Canonical(gaussians, normalisation, key, source)


def _canonical_source_hash(req: GenerateRequest, ingest_key: str, should_cancel: Optional[ShouldCancel]) -> tuple:
    kind, path = req.canonical
    if req.exact is not None:
        return (sha256_file(path, should_cancel), req.exact.to_json())
    if kind != "trellis":
        return (sha256_file(path, should_cancel), req.mesh_samples if kind == "mesh" else None)
    if req.weights is None:
        raise WeightsError("--canonical trellis needs --weights DIR holding trellis/ (TRELLIS-image-large), "
                           "gvf/ema_static_vae_0.9999_200000.pt and dinov2/")
    pipeline_json = req.weights / "trellis" / "pipeline.json"
    return (ingest_key, req.gvf.seed, sha256_file(pipeline_json) if pipeline_json.is_file() else None)


def _canonical_from_source(ctx: StageContext, footage: Footage) -> tuple[Gaussians, Normalisation, dict]:
    req = ctx.request
    kind, path = req.canonical
    source: dict = {"source": kind, "path": str(path) if path else None}
    if req.exact is not None:
        g, norm = req.exact.load(path)
        source["exact"] = True
    elif kind == "splat":
        g, norm = load_splat_canonical(path)
    elif kind == "mesh":
        g, norm = load_mesh_canonical(path, req.mesh_samples, seed=req.gvf.seed)
        source["samples"] = req.mesh_samples
    else:
        from .trellis import trellis_input_image
        prepared = footage.prepared
        trellis = ctx.models.get("trellis", req.weights, ctx.device)
        out = trellis.run(trellis_input_image(prepared.frames[0], prepared.alphas[0]), req.gvf.seed, ctx.progress)
        g, norm = out.gaussians.to_gaussians().to("cpu"), Normalisation((0.0, 0.0, 0.0), 1.0)
        source.update(voxels=out.voxels, gaussians=len(g), seed=req.gvf.seed, timings=out.timings,
                      checkpoints=trellis.sources, frame_index=prepared.frame_indices[0])
    return g, norm, source


def _write_canonical(canonical: tuple[Gaussians, Normalisation, dict], folder: Path) -> None:
    g, norm, source = canonical
    write_splat_ply(folder / "canonical.ply", g)
    (folder / "canonical.json").write_text(json.dumps({"normalisation": norm.to_json(), "source": source}))


def _read_canonical(folder: Path) -> tuple[Gaussians, Normalisation, dict]:
    record = json.loads((folder / "canonical.json").read_text())
    n = record["normalisation"]
    return read_splat_ply(folder / "canonical.ply"), Normalisation(tuple(n["centre"]), n["scale"]), record["source"]


def face_footage(ctx: StageContext, canonical: Canonical, footage: Footage, frames: Tensor,
                 alphas: Tensor) -> Canonical:
    """The canonical turned about +Z to the side that faces the camera in the first frame (see _search_facing)."""
    exact = ctx.request.exact
    facing = exact.facing() if exact else _search_facing(ctx, canonical, footage, frames, alphas)
    azimuth = facing["azimuth_deg"]
    gaussians = canonical.gaussians if exact else rotate_about_z(canonical.gaussians, -azimuth)  # given: turned
    turned = replace(canonical, gaussians=gaussians, azimuth_deg=azimuth)
    turned.metadata["facing"] = {**facing, "applied": "rotation about +Z by -azimuth, before any scale and offset"}
    ctx.lap("facing")
    return turned


def _search_facing(ctx: StageContext, canonical: Canonical, footage: Footage, frames: Tensor, alphas: Tensor) -> dict:
    """The published azimuth search: the canonical's rotation about +Z that best matches the first frame, scored
    with CLIP ViT-B/32 when <weights>/clip/ holds it, else by silhouette IoU + colour.
    -> {"azimuth_deg", "scorer", "step_deg"}."""
    req, device = ctx.request, ctx.device
    if req.azimuth_step <= 0:
        return {"azimuth_deg": 0.0, "scorer": None, "step_deg": 0.0}
    clip_folder = req.weights / "clip" if req.weights is not None else None
    use_clip = clip_folder is not None and (clip_folder / "config.json").is_file()
    key = stage_key("facing", footage.key, canonical.key, req.azimuth_step,
                    sha256_file(clip_folder / "config.json") if use_clip else None)

    def search() -> dict:
        steps = np.arange(-180.0, 180.0, req.azimuth_step).tolist()
        clip = ctx.models.get("clip", clip_folder, device) if use_clip else None
        found = search_azimuth(canonical.gaussians.to(device), frames[0].to(device), alphas[0].to(device), steps,
                               clip=clip)
        return {"azimuth_deg": found.azimuth_deg, "scorer": found.scorer, "step_deg": req.azimuth_step}
    return ctx.cached("facing", key, search, lambda d: json.loads((d / "facing.json").read_text()),
                      lambda record, d: (d / "facing.json").write_text(json.dumps(record)))


def run_fit(ctx: StageContext, canonical: Canonical, footage: Footage, frames: Tensor, alphas: Tensor) -> EngineOutput:
    """The fit engine: the canonical aligned to the first frame's silhouette, then its variation field fitted to
    the footage frame by frame."""
    req = ctx.request
    camera = footage_camera(req.fit_size, req.fit_size)
    key = stage_key("align", footage.key, canonical.key, req.fit_size, canonical.azimuth_deg)
    alignment = req.exact.alignment if req.exact else ctx.cached(
        "align", key, lambda: align_to_footage(canonical.gaussians, frames[0], alphas[0], camera),
        _read_alignment, lambda a, d: (d / "alignment.json").write_text(json.dumps(a.to_json())))
    canonical.metadata["alignment"] = {**alignment.to_json(), "azimuth_deg": canonical.azimuth_deg}
    ctx.lap("align")
    aligned = req.exact.footage_space(canonical.gaussians) if req.exact else alignment.apply(canonical.gaussians)
    animated = fit_variation_field(aligned, frames, alphas, camera, req.fit, ctx.progress, ctx.should_cancel)
    ctx.lap("fit")
    return EngineOutput(animated, {"name": "fit", "checkpoints": [], "settings": asdict(req.fit),
                                   "fit_size": req.fit_size}, None)


def _read_alignment(folder: Path) -> SilhouetteAlignment:
    a = json.loads((folder / "alignment.json").read_text())
    return SilhouetteAlignment(a["scale"], tuple(a["offset"]))


def run_gvf(ctx: StageContext, canonical: Canonical, footage: Footage, frames: Tensor, alphas: Tensor) -> EngineOutput:
    """The gvf engine: DINOv2 features of the frames, the published diffusion model sampling the variation field
    from them, and with --refine a fit against the footage starting from its result."""
    req, device = ctx.request, ctx.device
    if req.weights is None:
        raise WeightsError("the gvf engine needs --weights DIR holding gvf/ (the published checkpoints) and dinov2/")
    # the published render-time factor: recorded (what would frame renders of the result like the footage),
    # not applied — the model's canonical space is kept; --refine applies an alignment instead
    seen = req.exact.alignment if req.exact else align_to_silhouette(
        canonical.gaussians.to(device), alphas[0].to(device), footage_camera(req.fit_size, req.fit_size))
    canonical.metadata["alignment"] = {**seen.to_json(), "applied": False,
                                       "use": "scale and offset that make renders match the first frame's silhouette"}
    engine = ctx.models.get("gvf", req.weights / "gvf", device)
    dinov2 = ctx.models.get("dinov2", req.weights / "dinov2", device)
    ctx.lap("load")
    key = stage_key("features", footage.key, sha256_file(req.weights / "dinov2" / "config.json"))
    features = ctx.cached("features", key, lambda: dinov2(footage.prepared.frames).half(),
                          lambda d: torch.load(d / "features.pt", weights_only=True),
                          lambda f, d: torch.save(f, d / "features.pt"))
    ctx.lap("features")
    model_space = req.exact.model_space(canonical.gaussians) if req.exact else canonical.gaussians
    run = engine.run(GVFGaussians.from_gaussians(model_space), features.float(), req.gvf, ctx.progress)
    ctx.clock.timings.update(run.timings)
    ctx.clock.restart()
    engine_meta = engine.describe()
    animated = run.animated
    if req.refine > 0:
        animated, engine_meta["refine"] = _refine(ctx, canonical, animated, frames, alphas)
        ctx.lap("refine")
    sampler_meta = {**asdict(req.gvf), "solver": "dpmsolver++", "order": 2,
                    "network_evaluations": run.network_evaluations,
                    **({"windows": run.windows} if run.windows else {})}
    return EngineOutput(animated, engine_meta, sampler_meta)


def _refine(ctx: StageContext, canonical: Canonical, animated: AnimatedGaussians, frames: Tensor,
            alphas: Tensor) -> tuple[AnimatedGaussians, dict]:
    """--refine N: the engine's result aligned to the first frame's silhouette, then N fit steps per frame from
    there. -> the refined frames, the engine record's "refine" entry."""
    req, device = ctx.request, ctx.device
    camera = footage_camera(req.fit_size, req.fit_size).to(device)
    alignment = req.exact.alignment if req.exact else align_to_footage(
        canonical.gaussians.to(device), frames[0].to(device), alphas[0].to(device), camera)
    off = torch.tensor(alignment.offset, device=device)
    aligned = map_points(animated, lambda p: p * alignment.scale + off, alignment.scale)
    settings = replace(req.fit, iterations_first=req.refine, iterations=req.refine)
    refined = fit_variation_field(aligned.canonical, frames, alphas, camera, settings, ctx.progress,
                                  ctx.should_cancel, init=aligned)
    canonical.metadata["alignment"] = {**alignment.to_json(), "applied": True}
    return refined, {"iterations_per_frame": req.refine, "fit_size": req.fit_size, "settings": asdict(settings)}


def extract_deformed_mesh(ctx: StageContext, animated: AnimatedGaussians) -> dict:
    """A mesh of the canonical splat's surface and its vertices per frame: "vertices" (V, 3), "faces" (F, 3),
    "colors" (V, 3), "frames" (T, V, 3)."""
    from ..mesh_extraction import deform_vertices, extract_mesh
    m = extract_mesh(animated.canonical.to("cpu"), target_faces=ctx.request.mesh_faces)
    frames = deform_vertices(m.vertices, animated.to("cpu"))
    mesh = {"vertices": torch.from_numpy(m.vertices), "faces": torch.from_numpy(m.faces),
            "colors": torch.from_numpy(m.colors), "frames": frames}
    ctx.lap("mesh")
    return mesh


def write_result_file(ctx: StageContext, footage: Footage, canonical: Canonical, engine: EngineOutput,
                      mesh: Optional[dict]) -> Path:
    """The .gvf4d file: the frames, the mesh when extracted, and the metadata of every stage so far."""
    req, prepared = ctx.request, footage.prepared
    metadata = {
        **prepared.rate_metadata(),
        **prepared.to_metadata(),
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0},
        "canonical": canonical.metadata,
        "engine": engine.engine,
        "seed": req.gvf.seed if req.engine == "gvf" else None,
        "sampler": engine.sampler,
        "timings": dict(ctx.clock.timings),
        "reused_stages": list(ctx.reused),
        "coordinates": {"normalisation": canonical.normalisation.to_json()},
    }
    # the path the job was given (a cached ingest may have been prepared from another copy of the same footage)
    metadata["footage"]["path"] = str(req.recorded_footage or req.footage)
    if mesh is not None:
        metadata["mesh"] = {"method": "marching cubes on the splat density, pymeshlab clean + quadric decimation",
                            "target_faces": req.mesh_faces, "faces": int(mesh["faces"].shape[0]),
                            "deformation": "8 nearest Gaussians, weights opacity/distance, rigid per Gaussian"}
    out = write_result(req.out, engine.animated, metadata, mesh)
    ctx.lap("write")
    return out


def write_exports(ctx: StageContext, result: Path, animated: AnimatedGaussians, fps: float) -> list[Path]:
    """The requested exports beside the result: PLY per frame, GLB, preview video."""
    exports = ctx.request.exports
    files: list[Path] = []
    if "ply" in exports:
        files += write_ply_frames(result.parent / f"{result.stem}_ply", animated)
    if "glb" in exports:
        files.append(write_points_glb(result.with_suffix(".glb"), animated, fps))
    if "preview" in exports:
        files.append(write_preview_video(result.with_name(result.stem + "_preview.mp4"), animated, fps))
    if exports:
        ctx.lap("export")
    return files
