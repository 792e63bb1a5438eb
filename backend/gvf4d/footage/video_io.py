"""Video decoding and encoding through PyAV (imported on first use: image sequences need no video library)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from ..atomic import atomic_output
from ..limits import Limits
from .errors import FootageError

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".m4v", ".avi"}


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    rate: Fraction                 # frames per second, exact (24000/1001 for NTSC film)
    size: tuple[int, int]          # (width, height), from the stream's header
    has_alpha: bool


def probe_video(path: Path, limits: Optional[Limits] = None) -> VideoInfo:
    """The stream's header, its frame size checked against limits.max_frame_pixels before anything is decoded.
    The frame count is the container's when it records one, else the stream's packets counted (demuxed, not
    decoded)."""
    import av
    limits = limits or Limits.from_env()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FootageError(path, "has no video stream")
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or stream.guessed_rate or 24)
            pix = stream.codec_context.pix_fmt
            has_alpha = bool(pix) and any(c.is_alpha for c in av.VideoFormat(pix).components)
            width, height = stream.codec_context.width, stream.codec_context.height
            over = limits.exceeded("max_frame_pixels", width * height)
            if over:
                raise FootageError(path, f"frames are {width}x{height} = {width * height:,} pixels, {over}")
            count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as e:
        raise FootageError(path, f"cannot be decoded as video ({e})") from None
    if count == 0:
        raise FootageError(path, "contains no decodable frames")
    return VideoInfo(count, rate, (width, height), has_alpha)


def read_video_frames(path: Path, indices: Iterable[int], with_alpha: bool) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (index, frame) for the wanted indices in order: (H, W, 4) or (H, W, 3) uint8, one decoded frame at a
    time (frames between the wanted ones are decoded and dropped, never converted)."""
    import av
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
    import av
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

