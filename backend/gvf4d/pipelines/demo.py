"""The demo: a synthetic shot with known ground truth, its footage, ingestion, a .gvf4d result and exports."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..exporters import write_ply_frames, write_points_glb, write_preview_video
from ..footage import prepare_footage
from ..footage.video_io import write_mp4
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS
from ..result import write_result
from ..synthetic import make_synthetic_shot, render_footage


@dataclass
class DemoOutputs:
    result: Path
    ply_dir: Path
    glb: Path
    preview: Path
    footage_dir: Path
    footage_video: Path
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


def composite(frames: np.ndarray, background=(0, 177, 64)) -> np.ndarray:
    """(T, H, W, 4) uint8 straight RGBA over a solid colour -> (T, H, W, 3) uint8 (a green screen by default)."""
    a = frames[..., 3:4].astype(np.float32) / 255
    return (frames[..., :3] * a + np.asarray(background, np.float32) * (1 - a) + 0.5).astype(np.uint8)


def run_demo(out: Path, num_frames: int = 32, gaussians_per_part: int = 800, footage_size: int = 128,
             preview_size: int = 192, seed: int = 0, log: Callable[[str], None] = print) -> DemoOutputs:
    out = Path(out)
    timings: dict[str, float] = {}

    def stage(name):
        timings[name] = time.perf_counter()

    stage("synthetic")
    shot = make_synthetic_shot(num_frames=num_frames, gaussians_per_part=gaussians_per_part, seed=seed)
    log(f"synthetic shot: {len(shot.animated.canonical)} Gaussians x {num_frames} frames")
    rgba = render_footage(shot.animated, footage_size, footage_size).numpy()
    footage_dir = out / "footage"
    write_footage_frames(footage_dir, rgba)
    footage_video = write_mp4(out / "footage_greenscreen.mp4", composite(rgba), shot.fps)
    timings["synthetic"] = time.perf_counter() - timings["synthetic"]

    stage("ingest")
    prepared = prepare_footage(footage_dir, count=num_frames, fps=shot.fps)
    timings["ingest"] = time.perf_counter() - timings["ingest"]
    log(f"ingested {prepared.num_frames} frames from {footage_dir} (crop box {prepared.crop_box})")

    metadata = {
        "fps": shot.fps,
        **prepared.to_metadata(),
        "camera": {"model": "orbit", "fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0,
                   "elevation_deg": 0.0, "width": footage_size, "height": footage_size},
        "engine": {"name": "synthetic-ground-truth", "checkpoints": []},
        "seed": seed,
        "sampler": None,
        "coordinates": {"normalisation": {"centre": [0.0, 0.0, 0.0], "scale": 1.0,
                                          "note": "synthetic objects are built inside the unit cube"}},
    }
    stage("write")
    result = write_result(out / "result.gvf4d", shot.animated, metadata)
    timings["write"] = time.perf_counter() - timings["write"]
    stage("export")
    ply_dir = out / "ply"
    write_ply_frames(ply_dir, shot.animated)
    glb = write_points_glb(out / "result.glb", shot.animated, shot.fps)
    preview = write_preview_video(out / "preview.mp4", shot.animated, shot.fps, size=preview_size)
    timings["export"] = time.perf_counter() - timings["export"]
    for k, v in timings.items():
        log(f"  {k:10s} {v:7.2f} s")
    return DemoOutputs(result, ply_dir, glb, preview, footage_dir, footage_video, timings)
