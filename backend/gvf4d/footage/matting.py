"""Where the object's alpha comes from: the footage itself, a chroma key, a mask sequence, or a model.

method "auto" takes the footage's alpha when it has one that is not fully opaque; otherwise it runs the
matting model (<weights>/matting/u2net.onnx, U^2-Net as rembg ships it, through onnxruntime) and, when those
weights are missing, says how to do without them.
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
    if not weights.is_file():
        raise FootageError(source_path, f"frame {index} has no alpha and no matting model is available: the matting "
                                        f"weights {weights} are missing. Give the footage an alpha channel, or use "
                                        "--matte chroma[:#rrggbb] for a solid background, or --matte masks:DIR for a mask sequence")
    return U2NetMatting.load(weights)(image[..., :3])


class U2NetMatting:
    """Salient-object matting with a U^2-Net ONNX model (the published preprocessing's rembg 'u2net'):
    the frame resized to 320x320 (Lanczos), scaled by its maximum, ImageNet-normalised; the first output's
    first channel, min-max normalised, resized back (Lanczos)."""

    SIZE = 320
    MEAN = np.array([0.485, 0.456, 0.406], np.float32)
    STD = np.array([0.229, 0.224, 0.225], np.float32)
    _loaded: dict = {}

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: Path) -> "U2NetMatting":
        key = str(path)
        if key not in cls._loaded:
            try:
                import onnxruntime
            except ImportError:
                raise FootageError(path, "model matting needs the onnxruntime package (pip install onnxruntime)") from None
            try:
                cls._loaded[key] = cls(onnxruntime.InferenceSession(key, providers=["CPUExecutionProvider"]))
            except Exception as e:   # onnxruntime raises its own exception types for unreadable models
                raise FootageError(path, f"cannot be loaded as an ONNX matting model ({e})") from None
        return cls._loaded[key]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 alpha."""
        h, w = rgb.shape[:2]
        x = np.asarray(Image.fromarray(rgb).resize((self.SIZE, self.SIZE), Image.Resampling.LANCZOS), np.float32)
        x = x / max(float(x.max()), 1e-6)
        x = ((x - self.MEAN) / self.STD).transpose(2, 0, 1)[None].astype(np.float32)
        pred = self.session.run(None, {self.input_name: x})[0][0, 0]
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / max(hi - lo, 1e-12)
        mask = Image.fromarray((pred * 255).astype(np.uint8)).resize((w, h), Image.Resampling.LANCZOS)
        return np.asarray(mask)
