"""Footage -> .gvf4d: ingestion, the canonical splat, its facing, an engine (fit or gvf), the result file and
exports. The stages are in stages.py, the request in request.py, the loaded networks in model_registry.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..progress import Progress, ShouldCancel
from .model_registry import ModelRegistry
from .request import GenerateRequest
from .stage_cache import StageCache
from .stages import (StageContext, extract_deformed_mesh, face_footage, ingest_footage, make_canonical, run_fit,
                     run_gvf, write_exports, write_result_file)


@dataclass
class GenerateOutcome:
    result: Path
    files: list[Path]               # the result, then the exports
    reused: list[str]               # the stages read from the cache
    timings: dict[str, float]       # seconds per stage


def generate(req: GenerateRequest, progress: Optional[Progress] = None, should_cancel: Optional[ShouldCancel] = None,
             cache: Optional[StageCache] = None, models: Optional[ModelRegistry] = None) -> GenerateOutcome:
    """Runs the stages of `req` in order; a stage whose inputs `cache` holds is read from it, and networks come
    from `models` (loaded there on first use, kept there for the next call)."""
    ctx = StageContext(req, cache or StageCache(None), models or ModelRegistry(), _device(req.device), progress,
                       should_cancel)
    footage = ingest_footage(ctx)
    canonical = make_canonical(ctx, footage)
    frames, alphas = footage.prepared.tensors(req.fit_size)        # (T, S, S, 3), (T, S, S) at S = fit_size
    canonical = face_footage(ctx, canonical, footage, frames, alphas)
    run_engine = run_fit if req.engine == "fit" else run_gvf
    engine = run_engine(ctx, canonical, footage, frames, alphas)
    mesh = extract_deformed_mesh(ctx, engine.animated) if req.mesh else None
    result = write_result_file(ctx, footage, canonical, engine, mesh)
    exports = write_exports(ctx, result, engine.animated, footage.prepared.fps)
    return GenerateOutcome(result, [result, *exports], ctx.reused, ctx.clock.timings)


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
