"""Where the object's alpha comes from: the footage itself, a chroma key, a mask sequence, or a model.

method "auto" takes the footage's alpha when it has one that is not fully opaque; otherwise, when the first frame
stands on a solid background (white, black, a green screen: its borders are one colour), it keys that colour;
otherwise it runs a matting model through onnxruntime (`MATTING_MODELS`: BiRefNet lite, as `gvf4d weights
--download --matting` fetches it, else U^2-Net as rembg ships it) and, when none is present, says how to do
without one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from .errors import FootageError


@dataclass(frozen=True)
class MattingModel:
    """A salient-object ONNX model and the preprocessing it was trained with: the frame resized to size x size,
    scaled to [0, 1] (by its maximum for U^2-Net, as rembg does; by 255 otherwise), normalised by mean/std; the
    output at `output_index`, as logits (sigmoid) or a map min-max normalised, resized back."""

    name: str
    path: Path                        # under the weights folder
    size: int
    resample: Image.Resampling
    scale_by_max: bool
    output_index: int
    output: str                       # "sigmoid" | "minmax"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


# in order of preference; the first present is used
MATTING_MODELS = (
    MattingModel("birefnet_lite", Path("matting/birefnet_lite/onnx/model.onnx"), 1024, Image.Resampling.BILINEAR,
                 scale_by_max=False, output_index=-1, output="sigmoid"),
    MattingModel("u2net", Path("matting/u2net.onnx"), 320, Image.Resampling.LANCZOS,
                 scale_by_max=True, output_index=0, output="minmax"),
)

# solid-background detection: a band along the frame's edges, BORDER_FRACTION of its shorter side wide, whose
# pixels lie within UNIFORM_DISTANCE of their median colour: at least MIN_UNIFORM of the band, and MIN_SIDE_UNIFORM
# of each side (the object may reach into one or two sides)
BORDER_FRACTION = 0.03
UNIFORM_DISTANCE = 0.1
MIN_UNIFORM = 0.9
MIN_SIDE_UNIFORM = 0.5


@dataclass
class MattingOptions:
    method: str = "auto"                                  # auto | alpha | chroma | masks | model
    key_colour: Optional[tuple[int, int, int]] = None     # chroma: None = the median colour of the border
    tolerance: float = 0.18                               # chroma: colour distance (0..1) fully keyed out
    softness: Optional[float] = 0.12                      # chroma: distance range of the soft edge (None: `soft_key`)
    masks: Optional[Path] = None                          # masks: a folder of greyscale masks, one per frame
    weights_dir: Optional[Path] = None                    # model: the weights folder holding matting/

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


def _colour_distance(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(..., 3) in [0, 1] -> (...) Euclidean distance to colour, in [0, 1] (divided by the cube's diagonal)."""
    return np.linalg.norm(rgb - colour, axis=-1) / np.sqrt(3)


def soft_ramp_end(dist: np.ndarray, tolerance: float) -> float:
    """Where a soft key's ramp ends: below the bulk of the object's distances from the key (their 10th percentile),
    so its inside stays opaque, and at most 0.25 past the tolerance; the edge pixels, blends of object and
    background, get the alpha of their place on the ramp."""
    beyond = dist[dist > tolerance + 0.05]
    bulk = float(np.percentile(beyond, 10)) if beyond.size else tolerance + 0.25
    return min(tolerance + 0.25, max(bulk, tolerance + 0.02))


def chroma_key(image: np.ndarray, key: Optional[tuple[int, int, int]], tolerance: float,
               softness: Optional[float]) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 alpha: 0 near the key colour, 255 beyond tolerance + softness (softness
    None: up to `soft_ramp_end`). key None: the median colour of the border."""
    rgb = image[..., :3].astype(np.float32) / 255
    if key is None:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        key_f = np.median(border, axis=0)
    else:
        key_f = np.asarray(key, np.float32) / 255
    dist = _colour_distance(rgb, key_f)
    ramp = softness if softness is not None else soft_ramp_end(dist, tolerance) - tolerance
    alpha = np.clip((dist - tolerance) / max(ramp, 1e-6), 0, 1)
    return (alpha * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class SolidBackground:
    colour: tuple[int, int, int]
    tolerance: float             # the key's: above the border's own noise


def detect_solid_background(image: np.ndarray) -> Optional[SolidBackground]:
    """(H, W, 3|4) uint8 -> the background colour when the frame's borders are one uniform colour (see
    BORDER_FRACTION and the thresholds after it), else None. The colour is the band's per-channel median; the key's
    tolerance grows with the band's noise (its 99th-percentile distance from that colour: compression, grain)."""
    rgb = image[..., :3].astype(np.float32) / 255
    h, w = rgb.shape[:2]
    b = max(2, round(min(h, w) * BORDER_FRACTION))
    sides = [rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3), rgb[:, :b].reshape(-1, 3), rgb[:, -b:].reshape(-1, 3)]
    band = np.concatenate(sides)
    colour = np.median(band, axis=0)
    uniform = [_colour_distance(side, colour) < UNIFORM_DISTANCE for side in sides]
    if np.concatenate(uniform).mean() < MIN_UNIFORM or min(u.mean() for u in uniform) < MIN_SIDE_UNIFORM:
        return None
    dist = _colour_distance(band, colour)
    noise = float(np.percentile(dist[dist < UNIFORM_DISTANCE], 99))
    return SolidBackground(tuple(int(round(c * 255)) for c in colour), max(0.04, 2 * noise))


def resolve_auto(options: MattingOptions, image: np.ndarray) -> MattingOptions:
    """Method "auto" made concrete for footage whose frames look like `image` (its first): unchanged when it has
    an alpha channel to use, a soft key of the background when it stands on a solid colour, else the model."""
    if options.method != "auto" or _has_useful_alpha(image):
        return options
    background = detect_solid_background(image)
    if background is not None:
        return replace(options, method="chroma", key_colour=background.colour, tolerance=background.tolerance,
                       softness=None)
    return replace(options, method="model")


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
    options = resolve_auto(options, image)
    method = options.method
    if method in ("auto", "alpha"):
        if _has_useful_alpha(image):
            return image[..., 3]
        raise FootageError(source_path, f"frame {index} has no alpha channel (or it is fully opaque); "
                                        "use --matte chroma or --matte masks:DIR")
    if method == "chroma":
        return chroma_key(image, options.key_colour, options.tolerance, options.softness)
    if method == "masks":
        return (masks or MaskSequence(options.masks)).alpha(index, image.shape[:2])
    folder = options.weights_dir or Path("weights")
    model = next((m for m in MATTING_MODELS if (folder / m.path).is_file()), None)
    if model is None:
        raise FootageError(source_path, f"frame {index} has no alpha, its background is not one solid colour, and no "
                                        f"matting model is available: the matting weights "
                                        f"{' or '.join(str(folder / m.path) for m in MATTING_MODELS)} are missing "
                                        f"(`gvf4d weights --weights {folder} --download --matting` fetches one). Give "
                                        "the footage an alpha channel, or use --matte chroma[:#rrggbb] for a keyed "
                                        "background, or --matte masks:DIR for a mask sequence")
    return OnnxMatting.load(model, folder / model.path)(image[..., :3])


class OnnxMatting:
    """A `MattingModel` running in onnxruntime (CUDA where onnxruntime has it, else the CPU)."""

    _loaded: dict = {}

    def __init__(self, model: MattingModel, session):
        self.model = model
        self.session = session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(cls, model: MattingModel, path: Path) -> "OnnxMatting":
        key = str(path)
        if key not in cls._loaded:
            try:
                import onnxruntime
            except ImportError:
                raise FootageError(path, "model matting needs the onnxruntime package (pip install onnxruntime)") from None
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in onnxruntime.get_available_providers()]
            try:
                cls._loaded[key] = cls(model, onnxruntime.InferenceSession(key, providers=providers))
            except Exception as e:   # onnxruntime raises its own exception types for unreadable models
                raise FootageError(path, f"cannot be loaded as an ONNX matting model ({e})") from None
        return cls._loaded[key]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 alpha."""
        m = self.model
        h, w = rgb.shape[:2]
        x = np.asarray(Image.fromarray(rgb).resize((m.size, m.size), m.resample), np.float32)
        x = x / max(float(x.max()), 1e-6) if m.scale_by_max else x / 255
        x = ((x - np.asarray(m.mean, np.float32)) / np.asarray(m.std, np.float32)).transpose(2, 0, 1)[None]
        pred = self.session.run(None, {self.input_name: x.astype(np.float32)})[m.output_index][0, 0]
        if m.output == "sigmoid":
            pred = 1 / (1 + np.exp(-np.clip(pred, -30, 30)))
        else:
            lo, hi = float(pred.min()), float(pred.max())
            pred = (pred - lo) / max(hi - lo, 1e-12)
        mask = Image.fromarray((pred * 255).astype(np.uint8)).resize((w, h), m.resample)
        return np.asarray(mask)
