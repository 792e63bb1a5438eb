"""The demo: a synthetic shot with known ground truth -> its footage -> ingestion -> the artist's canonical
splat (the shot's rest pose, as a .ply) -> the weights-free fit engine -> .gvf4d + exports -> scores."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..canonical import Normalisation, load_splat_canonical
from ..canonical.align import SilhouetteAlignment, align_to_footage
from ..engines.fit import FitSettings, fit_variation_field
from ..evaluation import format_scores, map_points, score
from ..exporters import write_ply_frames, write_points_glb, write_preview_video, write_splat_ply
from ..footage import PreparedFootage, prepare_footage
from ..footage.video_io import write_mp4
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS, footage_camera
from ..progress import Progress, StageClock, printed_progress
from ..representations import AnimatedGaussians
from ..result import write_result
from ..synthetic import SyntheticShot, make_synthetic_shot, render_footage


@dataclass
class DemoOutputs:
    result: Path
    ply_dir: Path
    glb: Path
    preview: Path
    footage_dir: Path
    footage_video: Path
    scores: dict
    timings: dict[str, float] = field(default_factory=dict)


def write_footage_frames(folder: Path, frames: np.ndarray) -> list[Path]:
    """(T, H, W, 4) uint8 RGBA -> folder/frame_0000.png ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, f in enumerate(frames):
        p = folder / f"frame_{t:04d}.png"
        Image.fromarray(f, "RGBA").save(p)
        paths.append(p)
    return paths


def write_shot_files(shot: SyntheticShot, folder: Path, footage_size: int, device: str = "cpu") -> tuple[Path, Path]:
    """What an artist would bring for a synthetic shot: its footage (folder/footage/*.png, RGBA, plus a
    green-screen mp4) and its rest pose as a canonical splat (folder/canonical.ply)."""
    folder = Path(folder)
    rgba = render_footage(shot.animated.to(device), footage_size, footage_size).numpy()
    write_footage_frames(folder / "footage", rgba)
    write_mp4(folder / "footage_greenscreen.mp4", composite(rgba), shot.fps)
    return folder / "footage", write_splat_ply(folder / "canonical.ply", shot.animated.canonical)


def composite(frames: np.ndarray, background=(0, 177, 64)) -> np.ndarray:
    """(T, H, W, 4) uint8 straight RGBA over a solid colour -> (T, H, W, 3) uint8 (a green screen by default)."""
    a = frames[..., 3:4].astype(np.float32) / 255
    return (frames[..., :3] * a + np.asarray(background, np.float32) * (1 - a) + 0.5).astype(np.uint8)


@dataclass
class ShotReconstruction:
    """The fit engine's result for a synthetic shot, in the result's space and mapped back to the truth's."""

    animated: AnimatedGaussians          # the result, in its own space (what the .gvf4d stores)
    truth: AnimatedGaussians             # the ground truth carried into the result's space
    static_baseline: AnimatedGaussians   # the aligned canonical splat left static: what the engine must beat
    prepared: PreparedFootage
    alignment: SilhouetteAlignment
    normalisation: Normalisation
    canonical_ply: Path
    footage_dir: Path


def reconstruct_shot(shot: SyntheticShot, workdir: Path, footage_size: int = 256, fit_size: int = 128,
                     fit: FitSettings = FitSettings(), progress: Optional[Progress] = None,
                     lap: Callable[[str], None] = lambda name: None, device: str = "cpu") -> ShotReconstruction:
    """Renders the shot's footage into workdir/footage, ingests it, takes the shot's rest pose as the artist's
    canonical .ply (workdir/canonical.ply), aligns it to the first frame and fits the variation field."""
    footage_dir, canonical_ply = write_shot_files(shot, workdir, footage_size, device)
    lap("synthetic")
    prepared = prepare_footage(footage_dir, count=shot.animated.num_frames, fps=shot.fps)
    lap("ingest")
    canonical, normalisation = load_splat_canonical(canonical_ply)
    canonical = canonical.to(device)
    frames, alphas = prepared.tensors(fit_size)
    frames, alphas = frames.to(device), alphas.to(device)
    camera = footage_camera(fit_size, fit_size).to(device)
    alignment = align_to_footage(canonical, frames[0], alphas[0], camera)
    lap("canonical")
    animated = fit_variation_field(alignment.apply(canonical), frames, alphas, camera, fit, progress).to("cpu")
    if device != "cpu":
        torch.cuda.synchronize()
    lap("fit")
    canonical = canonical.to("cpu")
    # the truth in the result's space: the same unit-cube normalisation and alignment the canonical splat got
    centre = torch.tensor(normalisation.centre)
    off = torch.tensor(alignment.offset)
    to_result = lambda p: (p - centre) * (normalisation.scale * alignment.scale) + off
    truth = map_points(shot.animated, to_result, normalisation.scale * alignment.scale)
    static = AnimatedGaussians.static(alignment.apply(canonical), shot.animated.num_frames)
    return ShotReconstruction(animated, truth, static, prepared, alignment, normalisation, canonical_ply, footage_dir)


def run_demo(out: Path, num_frames: int = 32, gaussians_per_part: int = 400, footage_size: int = 256,
             fit_size: int = 128, preview_size: int = 192, seed: int = 0, fit: FitSettings = FitSettings(),
             log: Callable[[str], None] = print) -> DemoOutputs:
    out = Path(out)
    clock = StageClock()
    timings, lap = clock.timings, clock.lap
    progress = printed_progress(log)

    shot = make_synthetic_shot(num_frames=num_frames, gaussians_per_part=gaussians_per_part, seed=seed)
    log(f"synthetic shot: {len(shot.animated.canonical)} Gaussians x {num_frames} frames; fitting at {fit_size} px")
    rec = reconstruct_shot(shot, out, footage_size, fit_size, fit, progress, lap)
    metadata = {
        "fps": shot.fps,
        **rec.prepared.to_metadata(),
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0, "width": fit_size, "height": fit_size},
        "canonical": {"source": "splat", "path": str(rec.canonical_ply), "alignment": rec.alignment.to_json()},
        "engine": {"name": "fit", "checkpoints": [], "settings": asdict(fit)},
        "seed": seed,
        "sampler": None,
        "coordinates": {"normalisation": rec.normalisation.to_json()},
        "timings": dict(timings),
    }
    result = write_result(out / "result.gvf4d", rec.animated, metadata)
    ply_dir = out / "ply"
    write_ply_frames(ply_dir, rec.animated)
    glb = write_points_glb(out / "result.glb", rec.animated, shot.fps)
    preview = write_preview_video(out / "preview.mp4", rec.animated, shot.fps, size=preview_size)
    lap("export")
    scores = score(rec.animated, rec.truth)
    static = score(rec.static_baseline, rec.truth)
    lap("score")
    (out / "scores.json").write_text(json.dumps({"fit": scores, "static_baseline": static}, indent=2))
    log("scores against the ground truth (renders of the result vs renders of the true animation; static = no motion):")
    log(format_scores(scores, static))
    for k, v in timings.items():
        log(f"  {k:10s} {v:7.2f} s")
    return DemoOutputs(result, ply_dir, glb, preview, rec.footage_dir, out / "footage_greenscreen.mp4", scores, timings)
