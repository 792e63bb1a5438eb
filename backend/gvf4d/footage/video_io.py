"""Video decoding and encoding through PyAV."""
from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from ..atomic import atomic_output
from .errors import FootageError

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".m4v", ".avi"}


def probe_video(path: Path) -> tuple[int, float, tuple[int, int], bool]:
    """(frame count, fps, (width, height), has_alpha). Counts by decoding when the container does not say."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FootageError(path, "has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 24)
            pix = stream.codec_context.pix_fmt
            has_alpha = bool(pix) and any(c.is_alpha for c in av.VideoFormat(pix).components)
            size = (stream.codec_context.width, stream.codec_context.height)
            count = sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as e:
        raise FootageError(path, f"cannot be decoded as video ({e})") from None
    if count == 0:
        raise FootageError(path, "contains no decodable frames")
    return count, fps, size, has_alpha


def read_video_frames(path: Path, indices: Iterable[int], with_alpha: bool) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (index, frame) for the wanted indices in order: (H, W, 4) or (H, W, 3) uint8."""
    wanted = sorted(set(indices))
    if not wanted:
        return
    fmt = "rgba" if with_alpha else "rgb24"
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pos = 0
            for i, frame in enumerate(container.decode(stream)):
                if i == wanted[pos]:
                    yield i, frame.to_ndarray(format=fmt)
                    pos += 1
                    if pos == len(wanted):
                        return
    except av.error.FFmpegError as e:
        raise FootageError(path, f"decoding failed ({e})") from None
    raise FootageError(path, f"ended before frame {wanted[pos]}")


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> Path:
    """Writes (H, W, 3) uint8 frames as H.264 yuv420p (dimensions padded to even) to a temp file, then renames."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    h, w = first.shape[:2]
    pw, ph = w + (w % 2), h + (h % 2)
    with atomic_output(path, suffix=".mp4") as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in itertools.chain([first], frames):
            if (pw, ph) != (w, h):
                img = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

