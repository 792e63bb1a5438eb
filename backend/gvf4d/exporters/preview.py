"""A preview video of a result: the front view over time, then an orbit around the last frame."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..footage.video_io import write_mp4
from ..rendering import footage_camera, orbit_cameras, render_gaussians
from ..representations import AnimatedGaussians


def write_preview_video(path: str | os.PathLike, animated: AnimatedGaussians, fps: float, size: int = 256,
                        orbit_frames: int = 48) -> Path:
    front = footage_camera(size, size)
    orbit = orbit_cameras(np.linspace(0, 360, orbit_frames, endpoint=False).tolist(), 10.0, width=size, height=size)

    def frames():
        with torch.no_grad():
            for t in range(animated.num_frames):
                yield _to_uint8(render_gaussians(animated.frame(t), front).rgb[0])
            last = animated.frame(animated.num_frames - 1)
            for i in range(orbit_frames):
                yield _to_uint8(render_gaussians(last, orbit[i]).rgb[0])

    return write_mp4(Path(path), frames(), fps)


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
