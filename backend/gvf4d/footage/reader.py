"""Opening footage: a video file, a folder of images, or one image of a numbered sequence."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import FootageError
from .video_io import VIDEO_SUFFIXES, probe_video, read_video_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".exr"}


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


@dataclass
class FootageSource:
    """A readable piece of footage. frame_count counts every frame; has_alpha says the files carry alpha."""

    path: Path
    kind: str                      # "video" or "images"
    frame_count: int
    fps: float
    has_alpha: bool
    files: list[Path] = field(default_factory=list)   # image sequences: one file per frame

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (index, image) in index order; image is (H, W, 3|4) uint8."""
        if self.kind == "video":
            yield from read_video_frames(self.path, indices, with_alpha=self.has_alpha)
            return
        for i in sorted(set(indices)):
            yield i, read_image(self.files[i])

    def content_hash(self) -> str:
        """sha256 over the bytes of every file of the footage, in frame order."""
        h = hashlib.sha256()
        for f in (self.files if self.kind == "images" else [self.path]):
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) uint8; EXR (linear) is converted to sRGB."""
    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise FootageError(path, f"cannot be read as an image ({e})") from None


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR
    try:
        with OpenEXR.File(str(path)) as f:
            ch = f.channels()
            if "RGBA" in ch:
                px = np.asarray(ch["RGBA"].pixels, dtype=np.float32)
            elif "RGB" in ch:
                px = np.asarray(ch["RGB"].pixels, dtype=np.float32)
            elif all(c in ch for c in "RGB"):
                planes = [np.asarray(ch[c].pixels, dtype=np.float32) for c in ("RGBA" if "A" in ch else "RGB")]
                px = np.stack(planes, -1)
            else:
                raise FootageError(path, f"EXR has no RGB channels (has {sorted(ch)})")
    except FootageError:
        raise
    except Exception as e:  # OpenEXR raises plain exceptions for unreadable files
        raise FootageError(path, f"cannot be read as EXR ({e})") from None
    rgb = np.clip(px[..., :3], 0, None)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    out = [srgb]
    if px.shape[-1] == 4:
        out.append(px[..., 3:4])
    return (np.clip(np.concatenate(out, -1), 0, 1) * 255 + 0.5).astype(np.uint8)


def open_footage(path: str | Path, fps: Optional[float] = None) -> FootageSource:
    """path: a video file, a folder of images, or any one image of a numbered sequence in its folder."""
    path = Path(path)
    if not path.exists():
        raise FootageError(path, "does not exist")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        count, video_fps, _, has_alpha = probe_video(path)
        return FootageSource(path, "video", count, fps or video_fps, has_alpha)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        stem = re.sub(r"\d+$", "", path.stem)
        files = sorted((p for p in path.parent.iterdir()
                        if p.suffix.lower() == path.suffix.lower() and re.sub(r"\d+$", "", p.stem) == stem),
                       key=_natural_key)
        folder = path.parent
    elif path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        folder = path
    else:
        raise FootageError(path, f"is neither a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor an image sequence "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not files:
        raise FootageError(folder, f"contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    first = read_image(files[0])
    return FootageSource(folder if path.is_dir() else path, "images", len(files), fps or 24.0,
                         has_alpha=first.shape[-1] == 4, files=files)


def select_frame_indices(total: int, start: int = 0, end: Optional[int] = None, stride: int = 1,
                         count: Optional[int] = 32, path: str | Path = "footage") -> list[int]:
    """frames[start:end:stride][:count], as the published preprocessing picks them; the first is the canonical frame.

    Raises FootageError when fewer than `count` frames are available.
    """
    if stride < 1:
        raise FootageError(path, f"stride must be at least 1, got {stride}")
    if start < 0 or start >= total:
        raise FootageError(path, f"start frame {start} is outside the footage's {total} frames (0..{total - 1})")
    indices = list(range(total))[start:end:stride]
    if count is not None:
        if len(indices) < count:
            raise FootageError(path, f"{len(indices)} frames available from frame {start} to {end if end is not None else total} "
                                     f"with stride {stride}, but {count} were asked for; lower the stride or the frame count")
        indices = indices[:count]
    return indices
