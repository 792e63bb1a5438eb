"""Footage -> the model's 512x512 frames, cropped as the published in-the-wild preprocessing does.

The canonical (first kept) frame's alpha above 0.8 gives a box; its centre and 1.2x its longer side make a
square crop that every frame shares; each crop is resized to 380x380 (Lanczos), composited over white and
pasted at the centre of a white 512x512 canvas.

Ingestion streams: each frame is decoded, matted, cropped to the canvas and dropped before later frames are
decoded (a few at a time on worker threads), so a shot never holds its full-size frames; the budgets of
`limits.py` are checked from the files' headers before anything is decoded.
"""
from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..limits import Limits
from .errors import FootageError
from .matting import MaskSequence, MattingOptions, frame_alpha, resolve_auto
from .reader import open_footage, select_frame_indices

CANVAS_SIZE = 512
OBJECT_SIZE = 380
CROP_ENLARGE = 1.2
BOX_ALPHA_THRESHOLD = 0.8 * 255


@dataclass
class PreparedFootage:
    """frames (T, 512, 512, 3) uint8 over white; alphas (T, 512, 512) uint8; frame_indices into the source; fps the
    result's rate, fps_rational the footage's own when it is a ratio that is not whole (24000/1001)."""

    frames: np.ndarray
    alphas: np.ndarray
    frame_indices: list[int]
    crop_box: tuple[float, float, float, float]   # (x0, y0, x1, y1) in source pixels
    source_path: Path
    source_size: tuple[int, int]                  # (width, height)
    content_hash: str
    fps: float
    stride: int
    fps_rational: Optional[tuple[int, int]] = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def tensors(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames as float tensors at size x size (area-averaged): rgb (T, S, S, 3) over white, alpha (T, S, S)."""
        rgb = torch.from_numpy(self.frames).float().div(255).permute(0, 3, 1, 2)
        a = torch.from_numpy(self.alphas).float().div(255)[:, None]
        rgb = F.interpolate(rgb, size=(size, size), mode="area").permute(0, 2, 3, 1)
        a = F.interpolate(a, size=(size, size), mode="area")[:, 0]
        return rgb.contiguous(), a.contiguous()

    def save(self, folder: Path) -> None:
        """frames.npz + prepared.json in folder (the stage cache's copy)."""
        np.savez(folder / "frames.npz", frames=self.frames, alphas=self.alphas)
        (folder / "prepared.json").write_text(json.dumps({
            "frame_indices": self.frame_indices, "crop_box": list(self.crop_box), "source_path": str(self.source_path),
            "source_size": list(self.source_size), "content_hash": self.content_hash, "fps": self.fps,
            "stride": self.stride, "fps_rational": self.fps_rational}))

    @classmethod
    def load(cls, folder: Path) -> "PreparedFootage":
        arrays = np.load(folder / "frames.npz")
        m = json.loads((folder / "prepared.json").read_text())
        return cls(arrays["frames"], arrays["alphas"], m["frame_indices"], tuple(m["crop_box"]), Path(m["source_path"]),
                   tuple(m["source_size"]), m["content_hash"], m["fps"], m["stride"],
                   tuple(m["fps_rational"]) if m.get("fps_rational") else None)

    def rate_metadata(self) -> dict:
        """The result's "fps", with "fps_rational" [num, den] when the footage's rate is a ratio."""
        return {"fps": self.fps, **({"fps_rational": list(self.fps_rational)} if self.fps_rational else {})}

    def to_metadata(self) -> dict:
        x0, y0, x1, y1 = self.crop_box
        return {
            "footage": {"path": str(self.source_path), "sha256": self.content_hash, "frame_indices": self.frame_indices,
                        "frame_start": self.frame_indices[0], "frame_end": self.frame_indices[-1], "stride": self.stride,
                        "source_size": list(self.source_size), "fps": self.fps},
            "crop": {"box": [x0, y0, x1, y1], "side_px": x1 - x0, "object_px": OBJECT_SIZE, "canvas_px": CANVAS_SIZE,
                     "scale": OBJECT_SIZE / (x1 - x0)},
        }


def crop_box_from_alpha(alpha: np.ndarray, path: Path | str = "footage", index: int = 0) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(alpha > BOX_ALPHA_THRESHOLD)
    if xs.size == 0:
        raise FootageError(path, f"the object's mask in frame {index} is empty (no pixel with alpha above 0.8)")
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = int(max(x1 - x0, y1 - y0) * CROP_ENLARGE)
    return (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)


def crop_to_canvas(rgb: np.ndarray, alpha: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 + (H, W) uint8 -> (512, 512, 3) uint8 composited over white, (512, 512) uint8 alpha."""
    im = Image.fromarray(np.dstack([rgb[..., :3], alpha]), "RGBA").crop(box)
    im = im.resize((OBJECT_SIZE, OBJECT_SIZE), Image.Resampling.LANCZOS)
    arr = np.asarray(im).astype(np.float32) / 255
    a = arr[..., 3:4]
    comp = arr[..., :3] * a + (1 - a)
    off = (CANVAS_SIZE - OBJECT_SIZE) // 2
    canvas = np.ones((CANVAS_SIZE, CANVAS_SIZE, 3), np.float32)
    canvas[off:off + OBJECT_SIZE, off:off + OBJECT_SIZE] = comp
    mask = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.float32)
    mask[off:off + OBJECT_SIZE, off:off + OBJECT_SIZE] = a[..., 0]
    # the published script truncates to uint8; so do we
    return (canvas * 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def prepare_footage(path: str | Path, start: int = 0, end: Optional[int] = None, stride: int = 1,
                    count: Optional[int] = None, matting: Optional[MattingOptions] = None, fps: Optional[float] = None,
                    progress: Optional[Callable[[float], None]] = None,
                    limits: Optional[Limits] = None) -> PreparedFootage:
    """The frames [start:end:stride][:count] of the footage at path on the model's canvas (module docstring)."""
    source = open_footage(path, fps=fps, limits=limits)
    indices = select_frame_indices(source.frame_count, start, end, stride, count, path=source.path)
    source.check_budgets(indices)
    matting = matting or MattingOptions()
    masks = MaskSequence(matting.masks) if matting.method == "masks" else None
    decoded = source.read(indices)
    first_index, first = next(decoded)
    matting = resolve_auto(matting, first)          # one key colour (or model) for the whole shot
    first_alpha = frame_alpha(first, first_index, matting, source.path, masks)
    box = crop_box_from_alpha(first_alpha, source.path, first_index)
    size = (first.shape[1], first.shape[0])
    frames = np.empty((len(indices), CANVAS_SIZE, CANVAS_SIZE, 3), np.uint8)
    alphas = np.empty((len(indices), CANVAS_SIZE, CANVAS_SIZE), np.uint8)

    def to_canvas(k: int, i: int, image: np.ndarray, alpha: Optional[np.ndarray] = None) -> None:
        if (image.shape[1], image.shape[0]) != size:
            raise FootageError(source.path, f"frame {i} is {image.shape[1]}x{image.shape[0]}, frame {first_index} "
                                            f"is {size[0]}x{size[1]}")
        alpha = frame_alpha(image, i, matting, source.path, masks) if alpha is None else alpha
        if not (alpha > 127).any():
            raise FootageError(source.path, f"the object's mask in frame {i} is empty; check the matting settings")
        frames[k], alphas[k] = crop_to_canvas(image[..., :3], alpha, box)

    # matting and cropping run on a few threads (Pillow and numpy release the GIL in their loops); at most
    # `workers` decoded frames wait or run there at a time
    workers = max(1, min(8, len(indices), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight = deque([pool.submit(to_canvas, 0, first_index, first, first_alpha)])
        del first, first_alpha
        done = 0

        def settle(keep: int) -> None:
            nonlocal done
            while len(in_flight) > keep:
                in_flight.popleft().result()
                done += 1
                if progress:
                    progress(done / len(indices))

        for k, (i, image) in enumerate(decoded, start=1):
            settle(workers - 1)
            in_flight.append(pool.submit(to_canvas, k, i, image))
            del image
        settle(0)
    rate = source.rate if fps is None and source.rate is not None and source.rate.denominator != 1 else None
    return PreparedFootage(frames, alphas, indices, tuple(float(v) for v in box), source.path, size,
                           source.content_hash(), source.fps, stride,
                           (rate.numerator, rate.denominator) if rate else None)
