"""Rendering a `.gvf4d` result from a camera over a frame range: colour, alpha and depth per frame.

The path behind `gvf4d render` (and the add-on's "Render with the backend"): the result is read frame by frame
(every track, `sh_rest` when present; its coordinates are world coordinates), drawn with the backend's rasterizer
(gsplat on CUDA, the PyTorch reference otherwise) from the footage camera recorded in the file or from Blender
cameras (rendering/blender_camera.py), and written as one multilayer EXR per frame (scene-linear colour, alpha,
depth), optionally with an sRGB PNG preview. docs/render.md describes the options and the files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_output
from ..progress import Progress, ShouldCancel, check_cancel
from ..rendering import FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS, Cameras, orbit_cameras, rasterize
from ..rendering.blender_camera import BlenderCamera, read_blender_cameras
from ..rendering.color_space import linear_to_srgb, srgb_to_linear
from ..rendering.spherical_harmonics import sh_degree_of, sh_to_colors
from ..representations import Gaussians
from ..result import ResultFile, ResultFileError
from ..result.schema import TRACK_TENSORS

Blend = Literal["display", "linear"]
BLENDS = ("display", "linear")
EMPTY_DEPTH = 1e10  # depth where no splat covers the pixel: behind anything a Z combine compares it with
DEFAULT_SIZE = 512  # the crop canvas the footage camera belongs to, when the file records no size
_FRAME_ATTRS = {("means" if attr == "positions" else attr): name for attr, name in TRACK_TENSORS.items()}


@dataclass(frozen=True)
class RenderView:
    """One camera (a Cameras of length 1) and the depth range it draws, Gaussian centres outside it culled."""

    camera: Cameras
    near_plane: float = 0.01
    far_plane: float = 1e10


@dataclass
class RenderedFrame:
    """One rendered frame of the result (frame: its 0-based index in the file).

    color (1, H, W, 3) scene-linear Rec.709: premultiplied by alpha, or composited over the background when one is
    given; alpha (1, H, W, 1) the splat's coverage; depth (1, H, W, 1) the expected camera-space z in metres
    (sum w_i z_i / sum w_i over the blending weights) where alpha > 0, EMPTY_DEPTH elsewhere.
    """

    frame: int
    color: Tensor
    alpha: Tensor
    depth: Tensor


@dataclass
class RenderRequest:
    """camera: "footage" (the camera recorded in the result) or a Blender camera JSON file; frames: an "A:B" range
    of the result's frames (None: all); size (width, height) overrides the camera's; background: a display-sRGB
    colour, None for transparent."""

    result: Path
    out: Path
    camera: str | Path = "footage"
    frames: Optional[str] = None
    size: Optional[tuple[int, int]] = None
    blend: Blend = "display"
    background: Optional[tuple[float, float, float]] = None
    png: bool = False
    device: str = "auto"


def parse_frame_range(spec: Optional[str], num_frames: int) -> range:
    """"A:B" -> frames A..B-1 (0-based; either end may be left out), "A" -> frame A alone, None -> all frames."""
    if spec is None:
        return range(num_frames)
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            start, stop = int(a) if a.strip() else 0, int(b) if b.strip() else num_frames
        else:
            start = int(spec)
            stop = start + 1
    except ValueError:
        raise ValueError(f"--frames {spec!r} is not A:B (0-based frame numbers, B excluded)") from None
    if not 0 <= start < stop <= num_frames:
        raise ValueError(f"--frames {spec!r} is not a non-empty range within the result's frames 0:{num_frames}")
    return range(start, stop)


def footage_view(f: ResultFile, size: Optional[tuple[int, int]] = None) -> RenderView:
    """The footage camera recorded in the result's metadata (`camera`, an orbit camera; the README's front camera
    when the file has none), at `size` or at the size it records (else the crop canvas, else 512 px)."""
    cam = f.metadata.get("camera") or {"model": "orbit"}
    if not isinstance(cam, dict) or cam.get("model") != "orbit":
        raise ResultFileError(f.path, f"metadata camera {cam!r} is not an orbit camera")
    params = {"fov_x_deg": FOOTAGE_FOV_X_DEG, "radius": FOOTAGE_RADIUS, "azimuth_deg": 0.0, "elevation_deg": 0.0}
    for k in params:
        v = cam.get(k, params[k])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ResultFileError(f.path, f"metadata camera {k}={v!r} is not a number")
        params[k] = float(v)
    if not 0 < params["fov_x_deg"] < 180 or params["radius"] <= 0:
        raise ResultFileError(f.path, f"metadata camera has fov_x_deg={params['fov_x_deg']}, radius={params['radius']}")
    if size is None:
        canvas = (f.metadata.get("crop") or {}).get("canvas_px", DEFAULT_SIZE)
        size = (int(cam.get("width", canvas)), int(cam.get("height", canvas)))
    camera = orbit_cameras([params["azimuth_deg"]], params["elevation_deg"], params["radius"], params["fov_x_deg"],
                           width=size[0], height=size[1])
    return RenderView(camera)


def blender_views(cameras: Sequence[BlenderCamera], num_frames: int, size: Optional[tuple[int, int]],
                  path: Path) -> list[RenderView]:
    """One view per rendered frame: a single camera for all, or a list with one entry per rendered frame."""
    if len(cameras) not in (1, num_frames):
        raise ValueError(f"{path}: {len(cameras)} cameras for {num_frames} frames (give one, or one per frame)")
    views = [RenderView(c.cameras(size), c.clip_start, c.clip_end) for c in cameras]
    sizes = {(v.camera.width, v.camera.height) for v in views}
    if len(sizes) > 1:
        raise ValueError(f"{path}: the cameras' resolutions differ ({sorted(sizes)}); give --size or one resolution")
    return views * num_frames if len(views) == 1 else views


def frame_gaussians(f: ResultFile, t: int, canonical: Gaussians) -> Gaussians:
    """The splat at frame t: every track the file has, canonical values for the others (sh_rest included)."""
    tracks = {attr: torch.from_numpy(np.array(f.frame(name, t))).to(canonical.means.device)
              for attr, name in _FRAME_ATTRS.items() if f.has(name)}
    return replace(canonical, **tracks)


def sh_coefficients(g: Gaussians) -> Tensor:
    """(N, K, 3): the DC term, then the higher bands when the splat has them."""
    dc = g.sh_dc[:, None]
    return dc if g.sh_rest is None else torch.cat([dc, g.sh_rest.to(dc.dtype)], 1)


def render_view(g: Gaussians, view: RenderView, blend: Blend = "display",
                background: Optional[tuple[float, float, float]] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Colour, alpha, depth of one splat from one view, as RenderedFrame describes them.

    display: the display colours are blended (as 3DGS rasterizers do) and the composite is converted to linear
    light (unpremultiplied first when transparent); linear: each Gaussian's colour is converted to linear light
    and the linear colours are blended (as Blender composites).
    """
    cam = view.camera.to(g.means.device)
    coeffs = sh_coefficients(g)
    degree = sh_degree_of(coeffs.shape[1])
    common = dict(near_plane=view.near_plane, far_plane=view.far_plane, render_depth=True)
    if blend == "display":
        rgb, alpha, depth = rasterize(g.means, g.quats, g.scales, g.opacities, coeffs, cam.viewmats, cam.Ks,
                                      cam.width, cam.height, sh_degree=degree, **common)
        if background is None:
            straight = rgb / alpha.clamp_min(1e-10)
            color = torch.where(alpha > 0, alpha * srgb_to_linear(straight), torch.zeros_like(rgb))
        else:
            color = srgb_to_linear(rgb + (1 - alpha) * rgb.new_tensor(background))
    else:
        linear = srgb_to_linear(sh_to_colors(degree, coeffs, g.means, cam.viewmats))
        color, alpha, depth = rasterize(g.means, g.quats, g.scales, g.opacities, linear, cam.viewmats, cam.Ks,
                                        cam.width, cam.height, **common)
        if background is not None:
            color = color + (1 - alpha) * srgb_to_linear(color.new_tensor(background))
    depth = torch.where(alpha > 0, depth, torch.full_like(depth, EMPTY_DEPTH))
    return color, alpha, depth


def render_frames(f: ResultFile, views: Sequence[RenderView], frames: range, blend: Blend = "display",
                  background: Optional[tuple[float, float, float]] = None, device: str | torch.device = "cpu",
                  ) -> Iterator[RenderedFrame]:
    """Renders frames[i] from views[i], reading one frame of the file at a time."""
    canonical = f.canonical().to(device)
    with torch.no_grad():
        for t, view in zip(frames, views):
            g = frame_gaussians(f, t, canonical)
            yield RenderedFrame(t, *render_view(g, view, blend, background))


def write_exr(path: Path, color: Tensor, alpha: Tensor, depth: Tensor) -> Path:
    """One frame as a float32 EXR: R, G, B, A (scene-linear, premultiplied) and Depth.Z, a layout generic EXR
    readers show as RGBA and Blender reads as a multilayer image with Combined, Alpha and Depth passes.
    color (H, W, 3), alpha (H, W, 1), depth (H, W, 1)."""
    import OpenEXR
    planes = torch.cat([color, alpha, depth], -1).float().cpu().numpy()
    channels = {name: np.ascontiguousarray(planes[..., i]) for i, name in enumerate(("R", "G", "B", "A", "Depth.Z"))}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_output(path, suffix=".exr") as tmp:
        OpenEXR.File(header, channels).write(str(tmp))
    return path


def write_png(path: Path, color: Tensor, alpha: Optional[Tensor]) -> Path:
    """An 8-bit sRGB preview: RGBA with straight alpha when alpha is given, else RGB. color (H, W, 3) linear."""
    from PIL import Image
    if alpha is not None:
        color = torch.cat([color / alpha.clamp_min(1e-10), alpha], -1)
    pixels = torch.cat([linear_to_srgb(color[..., :3]), color[..., 3:]], -1).clamp(0, 1)
    array = (pixels * 255 + 0.5).to(torch.uint8).cpu().numpy()
    with atomic_output(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def render(req: RenderRequest, progress: Optional[Progress] = None,
           should_cancel: Optional[ShouldCancel] = None) -> list[Path]:
    """Checks every input first (ValueError naming the file and the problem), then renders and writes
    out/frame_NNNN.exr (and .png) for each frame NNNN of the range; returns the files written."""
    f = ResultFile(req.result)
    if f.has("canonical.sh_rest"):
        k = f.dims["K"] + 1
        try:
            sh_degree_of(k)
        except ValueError as e:
            raise ResultFileError(f.path, f"canonical.sh_rest: {e}") from None
    if req.blend not in BLENDS:
        raise ValueError(f"blend {req.blend!r} is not one of {list(BLENDS)}")
    if req.size is not None and (len(req.size) != 2 or min(req.size) < 1):
        raise ValueError(f"size {req.size} is not a positive width and height")
    if req.background is not None and (len(req.background) != 3 or not all(math.isfinite(c) for c in req.background)):
        raise ValueError(f"background {req.background} is not three finite numbers")
    try:
        frames = parse_frame_range(req.frames, f.num_frames)
    except ValueError as e:
        raise ValueError(f"{f.path}: {e}") from None
    if str(req.camera) == "footage":
        views = [footage_view(f, req.size)] * len(frames)
    else:
        path = Path(req.camera)
        views = blender_views(read_blender_cameras(path), len(frames), req.size, path)
    device = _device(req.device)
    out = Path(req.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{out}: cannot be made a folder for the frames ({e.strerror})") from None

    written: list[Path] = []
    for i, r in enumerate(render_frames(f, views, frames, req.blend, req.background, device)):
        check_cancel(should_cancel)
        name = out / f"frame_{r.frame:04d}"
        opaque = req.background is not None
        a = torch.ones_like(r.alpha[0]) if opaque else r.alpha[0]
        written.append(write_exr(name.with_suffix(".exr"), r.color[0], a, r.depth[0]))
        if req.png:
            written.append(write_png(name.with_suffix(".png"), r.color[0], None if opaque else r.alpha[0]))
        if progress is not None:
            progress("render", (i + 1) / len(frames))
    return written


def _device(name: str) -> torch.device:
    """"auto": CUDA when present (gsplat draws there), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device here")
    return device
