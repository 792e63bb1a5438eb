"""Opening footage: a video file, a folder of images, or one image of a numbered sequence."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..limits import Limits
from ..progress import ShouldCancel, check_cancel
from ..validation import open_regular_file
from .errors import FootageError
from .video_io import VIDEO_SUFFIXES, probe_video, read_video_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".exr"}


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


@dataclass
class FootageSource:
    """A readable piece of footage, described from its headers (nothing decoded). frame_count counts every
    frame; fps is the result's rate (the footage's own unless overridden), rate the footage's own exactly when a
    video records it; size is the first frame's (width, height); has_alpha says the files carry alpha."""

    path: Path
    kind: str                      # "video" or "images"
    frame_count: int
    fps: float
    has_alpha: bool
    size: tuple[int, int]
    files: list[Path] = field(default_factory=list)   # image sequences: one file per frame
    rate: Optional[Fraction] = None
    limits: Limits = field(default_factory=Limits.from_env)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (index, image) in index order, one decoded frame at a time; image is (H, W, 3|4) uint8. Each
        image file's size is checked against the frame budget from its header before it is decoded."""
        if self.kind == "video":
            yield from read_video_frames(self.path, indices, with_alpha=self.has_alpha)
            return
        for i in sorted(set(indices)):
            yield i, read_image(self.files[i], self.limits)

    def frame_size(self, index: int) -> tuple[int, int]:
        """(width, height) of frame `index`, from its header (a video's frames all share the stream's size)."""
        return self.size if self.kind == "video" else image_header(self.files[index], self.limits)[0]

    def check_budgets(self, indices: Sequence[int]) -> None:
        """Refuses (FootageError) a selection over the shot budgets: frames per shot, and pixels summed over the
        selected frames, read from headers before any frame is decoded."""
        over = self.limits.exceeded("max_frames", len(indices))
        if over:
            raise FootageError(self.path, f"{len(indices)} frames selected, {over}; select fewer with "
                                          "--frames, --end or --stride")
        pixels = sum(w * h for w, h in map(self.frame_size, indices))
        over = self.limits.exceeded("max_shot_pixels", pixels)
        if over:
            raise FootageError(self.path, f"the {len(indices)} selected frames hold {pixels:,} pixels, {over}; "
                                          "select fewer with --frames, --end or --stride")

    def content_hash(self, should_cancel: Optional[ShouldCancel] = None) -> str:
        """sha256 over the bytes of every file of the footage, in frame order (regular files only: a FIFO would be
        read forever), checking should_cancel between chunks."""
        h = hashlib.sha256()
        for f in (self.files if self.kind == "images" else [self.path]):
            with open_regular_file(f) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    check_cancel(should_cancel)
                    h.update(chunk)
        return h.hexdigest()


def _pil_has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _check_frame_pixels(path: Path, size: tuple[int, int], limits: Limits) -> None:
    over = limits.exceeded("max_frame_pixels", size[0] * size[1])
    if over:
        raise FootageError(path, f"is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, {over}")


def _open_pil(path: Path) -> Image.Image:
    """The image opened lazily: Pillow reads its header, the pixels are decoded on first access."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:
        raise FootageError(path, f"is too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError) as e:
        raise FootageError(path, f"cannot be read as an image ({e})") from None


def image_header(path: Path, limits: Optional[Limits] = None) -> tuple[tuple[int, int], bool]:
    """((width, height), has_alpha) from the image's header, nothing decoded; the size checked against the frame
    budget."""
    if path.suffix.lower() == ".exr":
        size, channels = _exr_header(path)
        has_alpha = "A" in channels
    else:
        with _open_pil(path) as im:
            size, has_alpha = im.size, _pil_has_alpha(im)
    _check_frame_pixels(path, size, limits or Limits.from_env())
    return size, has_alpha


def read_image(path: Path, limits: Optional[Limits] = None) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) uint8, its size checked against the frame budget from the header first; EXR
    (linear) is converted to sRGB."""
    limits = limits or Limits.from_env()
    if path.suffix.lower() == ".exr":
        _check_frame_pixels(path, _exr_header(path)[0], limits)
        return _read_exr(path)
    with _open_pil(path) as im:
        _check_frame_pixels(path, im.size, limits)
        try:
            return np.asarray(im.convert("RGBA" if _pil_has_alpha(im) else "RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise FootageError(path, f"cannot be read as an image ({e})") from None


def _exr_header(path: Path) -> tuple[tuple[int, int], set[str]]:
    """((width, height), channel names) from an EXR file's header."""
    import OpenEXR
    try:
        with OpenEXR.File(str(path), header_only=True) as f:     # the header is the file's: read it while open
            (x0, y0), (x1, y1) = f.header()["dataWindow"]
            channels = {c.name for c in f.header()["channels"]}
    except Exception as e:  # OpenEXR raises plain exceptions for unreadable files
        raise FootageError(path, f"cannot be read as EXR ({e})") from None
    return (int(x1 - x0 + 1), int(y1 - y0 + 1)), channels


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


def open_footage(path: str | Path, fps: Optional[float] = None, limits: Optional[Limits] = None) -> FootageSource:
    """path: a video file, a folder of images, or any one image of a numbered sequence in its folder. Read from
    headers only (the first frame's size checked against the frame budget); fps overrides the footage's rate
    (images: 24 unless given)."""
    path = Path(path)
    limits = limits or Limits.from_env()
    if not path.exists():
        raise FootageError(path, "does not exist")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        info = probe_video(path, limits)
        return FootageSource(path, "video", info.frame_count, fps or float(info.rate), info.has_alpha, info.size,
                             rate=info.rate, limits=limits)
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
    size, has_alpha = image_header(files[0], limits)
    return FootageSource(folder if path.is_dir() else path, "images", len(files), fps or 24.0, has_alpha, size,
                         files=files, limits=limits)


def select_frame_indices(total: int, start: int = 0, end: Optional[int] = None, stride: int = 1,
                         count: Optional[int] = None, path: str | Path = "footage") -> list[int]:
    """frames[start:end:stride][:count] (docs/design.md §2): every frame of the range with the stride, at most the
    first `count` of them when given; the first is the canonical frame."""
    if stride < 1:
        raise FootageError(path, f"stride must be at least 1, got {stride}")
    if start < 0 or start >= total:
        raise FootageError(path, f"start frame {start} is outside the footage's {total} frames (0..{total - 1})")
    if count is not None and count < 1:
        raise FootageError(path, f"the frame count must be at least 1, got {count}")
    return list(range(total))[start:end:stride][:count]
