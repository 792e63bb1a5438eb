"""The job request as the API takes it (JSON), and its translation into a GenerateRequest."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field

from ..engines.fit import FitSettings
from ..pipelines.generate import GenerateRequest
from ..pipelines.gvf import GVFSettings


class JobRequest(BaseModel):
    """A generation job. Paths are on the backend's machine."""

    footage: str = Field(description="video file, image folder, or one image of a numbered sequence")
    canonical: Literal["trellis", "mesh", "splat"] = Field(
        "splat", description="trellis: generated from the first frame (needs weights); mesh / splat: the file at canonical_path")
    canonical_path: Optional[str] = Field(None, description="mesh (.glb/.obj/.ply/...) or 3DGS splat (.ply)")
    engine: Literal["fit", "gvf"] = "fit"
    weights: Optional[str] = None
    frames: int = Field(32, ge=1, le=512)
    start: int = Field(0, ge=0)
    end: Optional[int] = Field(None, ge=1)
    stride: int = Field(1, ge=1, le=1000)
    matte: str = "auto"
    fps: Optional[float] = Field(None, gt=0, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    method: Literal["adaptive", "multistep"] = "adaptive"
    steps: int = Field(100, ge=1, le=1000)
    guidance: tuple[float, float] = (1.0, 1.0)
    fit_size: int = Field(128, ge=16, le=1024)
    fit_iterations: int = Field(20, ge=1, le=1000)
    refine: int = Field(0, ge=0, le=1000, description="gvf engine: fit steps per frame refining its result")
    azimuth_step: Optional[float] = Field(None, ge=0.0, le=180.0,
                                          description="azimuth search step in degrees (0: off; null: 1 for trellis, else off)")
    mesh: bool = Field(False, description="also extract a mesh and its per-frame deformation")
    mesh_faces: int = Field(20_000, ge=100, le=2_000_000)
    mesh_samples: int = Field(100_000, ge=100, le=2_000_000, description="canonical mesh: Gaussians on its surface")
    exports: list[Literal["ply", "glb", "preview"]] = []
    name: str = Field("result", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the result's file name (no folders)")


def request_from_json(data: dict, job_dir: Path) -> GenerateRequest:
    r = JobRequest.model_validate(data)
    return GenerateRequest(
        footage=Path(r.footage), out=job_dir / f"{r.name}.gvf4d", canonical=(r.canonical, Path(r.canonical_path) if r.canonical_path else None),
        engine=r.engine, weights=Path(r.weights) if r.weights else None, frames=r.frames, start=r.start, end=r.end,
        stride=r.stride, matte=r.matte, fps=r.fps, fit_size=r.fit_size,
        fit=FitSettings(iterations_first=2 * r.fit_iterations, iterations=r.fit_iterations),
        gvf=GVFSettings(seed=r.seed, method=r.method, steps=r.steps, guidance_scale=r.guidance[0],
                        guidance_scale2=r.guidance[1]),
        exports=tuple(r.exports), refine=r.refine, azimuth_step=r.azimuth_step, mesh=r.mesh, mesh_faces=r.mesh_faces,
        mesh_samples=r.mesh_samples)
