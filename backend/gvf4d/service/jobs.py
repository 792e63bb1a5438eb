"""The job requests as the API takes them (JSON) — a generation, or a render of a result (`kind`) —, their
translation into the pipelines' requests, and `run_job`, which runs one job of either kind for the local worker
and the Ray actors alike."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ..atomic import atomic_output
from ..canonical import ExactCanonical, Normalisation
from ..canonical.align import SilhouetteAlignment
from ..engines.fit import FitSettings
from ..limits import Limits
from ..pipelines.generate import generate
from ..pipelines.gvf import GVFSettings
from ..pipelines.model_registry import ModelRegistry
from ..pipelines.render import RenderRequest, render
from ..pipelines.request import GenerateRequest
from ..pipelines.stage_cache import StageCache
from ..progress import Progress, ShouldCancel
from ..rendering.blender_camera import blender_cameras
from ..validation import (RequestError, check_name, check_path_text, check_render_request, check_request,
                          within_budget)
from .store import JobStore

JOB_KINDS = ("generate", "render")
CAMERA_FILE = "camera.json"      # a render job's Blender cameras, written in its folder for the renderer


class GivenAlignment(BaseModel):
    """A result's `canonical.alignment` record, as a rerun on its canonical passes it on (other keys ignored)."""

    model_config = ConfigDict(allow_inf_nan=False)

    scale: float
    offset: tuple[float, float, float]
    applied: bool = Field(True, description="whether the result's values include it (fit engine, refine) or not (gvf)")


class GivenNormalisation(BaseModel):
    """A result's `coordinates.normalisation` record: normalised = (original - centre) * scale."""

    model_config = ConfigDict(allow_inf_nan=False)

    centre: tuple[float, float, float]
    scale: float


class JobRequest(BaseModel):
    """A generation job. Paths are on the backend's machine. Types are checked here; ranges, files and budgets by
    `gvf4d.validation` (the CLI's rules), so the API and the CLI refuse the same requests with the same messages."""

    model_config = ConfigDict(allow_inf_nan=False)     # JSON's NaN / Infinity are refused, never stored

    kind: Literal["generate"] = Field("generate", description="generate (the default) or render")
    footage: str = Field(description="video file, image folder, or one image of a numbered sequence")
    recorded_footage: Optional[str] = Field(None, description="the footage path the result records (null: "
                                            "footage): the client's own path when footage names a copy of it")
    canonical: Literal["trellis", "mesh", "splat"] = Field(
        "splat", description="trellis: generated from the first frame (needs weights); mesh / splat: the file at canonical_path")
    canonical_path: Optional[str] = Field(None, description="mesh (.glb/.obj/.ply/...) or 3DGS splat (.ply)")
    engine: Literal["fit", "gvf"] = "fit"
    weights: Optional[str] = None
    frames: Optional[int] = Field(None, description="use at most this many of the selected frames (null: all of them)")
    start: int = 0
    end: Optional[int] = None
    stride: int = 1
    matte: str = "auto"
    fps: Optional[float] = None
    seed: int = 0
    method: Literal["adaptive", "multistep"] = "adaptive"
    steps: int = 100
    guidance: tuple[float, float] = (1.0, 1.0)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="gvf engine: auto is fp16 on CUDA (as published), fp32 on the CPU")
    fit_size: int = 128
    fit_iterations: int = 20
    refine: int = Field(0, description="gvf engine: fit steps per frame refining its result")
    azimuth_step: Optional[float] = Field(None, description="azimuth search step in degrees (0: off; null: 1 for "
                                                            "trellis, else off)")
    mesh: bool = Field(False, description="also extract a mesh and its per-frame deformation")
    mesh_faces: int = 20_000
    mesh_samples: int = Field(100_000, description="canonical mesh: Gaussians on its surface")
    exports: list[Literal["ply", "glb", "preview"]] = []
    canonical_exact: bool = Field(False, description="splat canonical in the space of an earlier result (its "
                                  "canonical, edited): used as it is, without normalisation, facing search or "
                                  "alignment; facing_deg, alignment and normalisation are that result's")
    facing_deg: float = Field(0.0, description="canonical_exact: the result's canonical.facing.azimuth_deg")
    alignment: Optional[GivenAlignment] = Field(None, description="canonical_exact: the result's canonical.alignment")
    normalisation: Optional[GivenNormalisation] = Field(
        None, description="canonical_exact: the result's coordinates.normalisation")
    name: str = Field("result", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the result's file name (no folders)")


class RenderJobRequest(BaseModel):
    """A render job (docs/render.md): a result drawn by the backend's rasterizer from a camera over a frame range,
    one multilayer EXR per frame (`frame_NNNN.exr`, NNNN the result's frame) in the job's folder. Paths are on the
    backend's machine; checked as `gvf4d render` checks its inputs."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    kind: Literal["render"]
    result: Optional[str] = Field(None, description="the .gvf4d to render (an uploaded file for a backend elsewhere)")
    result_job: Optional[str] = Field(None, pattern=r"^[0-9a-f]{1,32}$",
                                      description="instead of result: a finished generation job, its result rendered")
    camera: Union[Literal["footage"], dict[str, Any], list[dict[str, Any]]] = Field(
        "footage", description="footage: the camera recorded in the result; or a Blender camera (docs/render.md), "
                               "or a list of them, one per rendered frame")
    frames: Optional[str] = Field(None, pattern=r"^[0-9]{0,9}(:[0-9]{0,9})?$",
                                  description="A:B renders the result's frames A..B-1, 0-based (null: all)")
    size: Optional[tuple[int, int]] = Field(None, description="[width, height] in pixels (null: the camera's)")
    blend: Literal["display", "linear"] = "display"
    background: Optional[tuple[float, float, float]] = Field(
        None, description="a display (sRGB) colour, 0-1, under the splat (null: transparent)")
    png: bool = Field(False, description="also an 8-bit sRGB preview per frame")


def job_kind(data) -> str:
    """A request's kind (a JSON object or a model); "generate" when it names none, as requests before render jobs."""
    kind = data.get("kind", "generate") if isinstance(data, dict) else getattr(data, "kind", "generate")
    return kind if isinstance(kind, str) else repr(kind)


# the body of POST /v1/jobs: a generation or a render job, told apart by `kind`
JobBody = Annotated[Union[Annotated[JobRequest, Tag("generate")], Annotated[RenderJobRequest, Tag("render")]],
                    Discriminator(job_kind)]


def resolve_result_job(data: dict, store: JobStore, job_dir: Callable[[str], Path]) -> dict:
    """A render request naming its result by `result_job` gets `result`, that finished generation job's result file
    (404 without such a job, 409 before it is done)."""
    if job_kind(data) != "render" or data.get("result_job") is None:
        return data
    if data.get("result") is not None:
        raise RequestError("give 'result' or 'result_job', not both")
    job = store.get(data["result_job"])
    if job is None:
        raise RequestError(f"result_job: no job {data['result_job']}", status=404)
    if job_kind(job.request) != "generate":
        raise RequestError(f"result_job: job {job.id} is a {job_kind(job.request)} job, not a generation")
    if job.state != "done":
        raise RequestError(f"result_job: job {job.id} is {job.state}; render its result once it is done", status=409)
    return {**data, "result": str(job_dir(job.id) / job.result)}


def render_request_from_json(data: dict, job_dir: Path, limits: Optional[Limits] = None,
                             paths: bool = True) -> RenderRequest:
    """The RenderRequest of a render job's JSON, written into job_dir (its Blender cameras in CAMERA_FILE there),
    checked by `validation.check_render_request` (RequestError when refused)."""
    r = RenderJobRequest.model_validate(data)
    if r.result is None:
        raise RequestError("a render needs 'result' (a .gvf4d on the backend's machine) or 'result_job' (a job)")
    limits = limits or Limits.from_env()
    cameras = None
    if r.camera != "footage":
        if isinstance(r.camera, list):       # counted before each is parsed
            within_budget(limits, "max_frames", "cameras", len(r.camera))
        try:
            cameras = blender_cameras(r.camera, "camera")
        except ValueError as e:
            raise RequestError(str(e)) from None
    camera = "footage" if cameras is None else job_dir / CAMERA_FILE
    req = RenderRequest(result=Path(r.result), out=job_dir, camera=camera, frames=r.frames, size=r.size,
                        blend=r.blend, background=r.background, png=r.png)
    return check_render_request(req, limits, paths=paths, cameras=cameras)


def request_from_json(data: dict, job_dir: Path, limits: Optional[Limits] = None, paths: bool = True) -> GenerateRequest:
    """The GenerateRequest of a job's JSON, checked by `validation.check_request` (RequestError when refused)."""
    r = JobRequest.model_validate(data)
    check_name("name", r.name)
    if r.canonical != "trellis" and not r.canonical_path:
        raise RequestError(f"canonical '{r.canonical}' needs 'canonical_path' (the file)")
    req = GenerateRequest(
        footage=Path(r.footage), out=job_dir / f"{r.name}.gvf4d", canonical=(r.canonical, Path(r.canonical_path) if r.canonical_path else None),
        engine=r.engine, weights=Path(r.weights) if r.weights else None, frames=r.frames, start=r.start, end=r.end,
        stride=r.stride, matte=r.matte, fps=r.fps, fit_size=r.fit_size,
        fit=FitSettings(iterations_first=2 * r.fit_iterations, iterations=r.fit_iterations),
        gvf=GVFSettings(seed=r.seed, method=r.method, steps=r.steps, guidance_scale=r.guidance[0],
                        guidance_scale2=r.guidance[1], precision=r.precision),
        exports=tuple(r.exports), refine=r.refine, azimuth_step=r.azimuth_step, mesh=r.mesh, mesh_faces=r.mesh_faces,
        mesh_samples=r.mesh_samples, exact=_exact_canonical(r),
        recorded_footage=check_path_text("recorded_footage", r.recorded_footage) if r.recorded_footage else None)
    return check_request(req, limits, paths=paths)


def _exact_canonical(r: JobRequest) -> Optional[ExactCanonical]:
    """The space a canonical given exactly comes in (None: the canonical is normalised, faced and aligned)."""
    if not r.canonical_exact:
        if r.facing_deg or r.alignment is not None or r.normalisation is not None:
            raise RequestError("facing_deg, alignment and normalisation describe a canonical given exactly: "
                               "they need canonical_exact")
        return None
    if r.canonical != "splat":
        raise RequestError(f"canonical_exact needs canonical 'splat' (a 3DGS .ply), not '{r.canonical}'")
    exact = ExactCanonical(facing_deg=r.facing_deg)
    if r.alignment is not None:
        exact = replace(exact, alignment=SilhouetteAlignment(r.alignment.scale, r.alignment.offset),
                        alignment_applied=r.alignment.applied)
    if r.normalisation is not None:
        exact = replace(exact, normalisation=Normalisation(r.normalisation.centre, r.normalisation.scale))
    return exact


def check_job(data: dict, job_dir: Path, limits: Optional[Limits] = None) -> None:
    """Checks a job's JSON of either kind as its run will (RequestError when refused)."""
    if job_kind(data) == "render":
        render_request_from_json(data, job_dir, limits)
    else:
        request_from_json(data, job_dir, limits)


@dataclass
class JobOutcome:
    files: list[Path]               # what the job wrote in its folder, its result first
    reused: list[str]               # the stages read from the stage cache
    timings: dict[str, float]       # seconds per stage


def run_job(request: dict, job_dir: Path, limits: Limits, progress: Progress, should_cancel: ShouldCancel,
            cache: StageCache, models: ModelRegistry) -> JobOutcome:
    """Runs one job of either kind, writing into job_dir: a generation (its result, then the exports) or a render
    (one EXR per frame, progress per frame, cancelled between frames)."""
    if job_kind(request) != "render":
        outcome = generate(request_from_json(request, job_dir, limits), progress, should_cancel, cache, models)
        return JobOutcome(outcome.files, outcome.reused, outcome.timings)
    req = render_request_from_json(request, job_dir, limits)
    if req.camera != "footage":
        with atomic_output(req.camera) as tmp:
            tmp.write_text(json.dumps(request["camera"]))
    start = time.perf_counter()
    files = render(req, progress, should_cancel)
    return JobOutcome(files, [], {"render": round(time.perf_counter() - start, 3)})
