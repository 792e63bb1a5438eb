"""Where the object's alpha comes from: the footage itself, a chroma key, a mask sequence, or a model.

method "auto" takes the footage's alpha when it has one that is not fully opaque; otherwise it needs a
matting model's weights (<weights>/matting/u2net.onnx) and says how to do without them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from .errors import FootageError

MATTING_WEIGHTS = Path("matting") / "u2net.onnx"


@dataclass
class MattingOptions:
    method: str = "auto"                                  # auto | alpha | chroma | masks | model
    key_colour: Optional[tuple[int, int, int]] = None     # chroma: None = the median colour of the border
    tolerance: float = 0.18                               # chroma: colour distance (0..1) fully keyed out
    softness: float = 0.12                                # chroma: distance range of the soft edge
    masks: Optional[Path] = None                          # masks: a folder of greyscale masks, one per frame
    weights_dir: Optional[Path] = None                    # model: where matting/u2net.onnx would be

    @classmethod
    def parse(cls, spec: str, weights_dir: Optional[Path] = None) -> "MattingOptions":
        """'auto', 'alpha', 'model', 'chroma', 'chroma:#00ff00', 'chroma:#00ff00:0.2', 'masks:DIR'."""
        kind, _, rest = spec.partition(":")
        if kind in ("auto", "alpha", "model") and not rest:
            return cls(method=kind, weights_dir=weights_dir)
        if kind == "chroma":
            opts = cls(method="chroma")
            if rest:
                colour, _, tol = rest.partition(":")
                if not re.fullmatch(r"#?[0-9a-fA-F]{6}", colour):
                    raise ValueError(f"--matte {spec!r}: key colour must be hex like #00ff00")
                c = colour.lstrip("#")
                opts.key_colour = (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))
                if tol:
                    opts.tolerance = float(tol)
            return opts
        if kind == "masks" and rest:
            return cls(method="masks", masks=Path(rest))
        raise ValueError(f"--matte {spec!r}: expected auto, alpha, model, chroma[:#rrggbb[:tolerance]] or masks:DIR")


def _has_useful_alpha(image: np.ndarray) -> bool:
    return image.shape[-1] == 4 and bool((image[..., 3] < 255).any())


def chroma_key(image: np.ndarray, key: Optional[tuple[int, int, int]], tolerance: float, softness: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 alpha: 0 near the key colour, 255 beyond tolerance + softness."""
    rgb = image[..., :3].astype(np.float32) / 255
    if key is None:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        key_f = np.median(border, axis=0)
    else:
        key_f = np.asarray(key, np.float32) / 255
    dist = np.linalg.norm(rgb - key_f, axis=-1) / np.sqrt(3)
    alpha = np.clip((dist - tolerance) / max(softness, 1e-6), 0, 1)
    return (alpha * 255 + 0.5).astype(np.uint8)


class MaskSequence:
    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise FootageError(folder, "mask folder does not exist")
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")),
                            key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)])
        if not self.files:
            raise FootageError(folder, "mask folder holds no .png/.jpg masks")
        self.folder = folder

    def alpha(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        if index >= len(self.files):
            raise FootageError(self.folder, f"has {len(self.files)} masks but footage frame {index} needs one")
        with Image.open(self.files[index]) as im:
            m = im.convert("L")
            if m.size != (shape[1], shape[0]):
                raise FootageError(self.files[index], f"mask is {m.size[0]}x{m.size[1]}, the frame is {shape[1]}x{shape[0]}")
            return np.asarray(m)


def frame_alpha(image: np.ndarray, index: int, options: MattingOptions, source_path: Path,
                masks: Optional[MaskSequence] = None) -> np.ndarray:
    """The object's alpha (H, W) uint8 for one footage frame."""
    method = options.method
    if method in ("auto", "alpha"):
        if _has_useful_alpha(image):
            return image[..., 3]
        if method == "alpha":
            raise FootageError(source_path, f"frame {index} has no alpha channel (or it is fully opaque); "
                                            "use --matte chroma or --matte masks:DIR")
        method = "model"
    if method == "chroma":
        return chroma_key(image, options.key_colour, options.tolerance, options.softness)
    if method == "masks":
        return (masks or MaskSequence(options.masks)).alpha(index, image.shape[:2])
    weights = (options.weights_dir or Path("weights")) / MATTING_WEIGHTS
    raise FootageError(source_path, f"frame {index} has no alpha and no matting model is available: the matting weights "
                                    f"{weights} are missing. Give the footage an alpha channel, or use "
                                    "--matte chroma[:#rrggbb] for a solid background, or --matte masks:DIR for a mask sequence")
