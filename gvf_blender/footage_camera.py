"""The camera that sees the plate: the backend's footage camera (the 512-px crop canvas) carried back to the
source footage's pixels through the crop, with the footage as its background image; and the scene format
(resolution, frame range, fps) that matches the result.

The crop (docs/format.md `crop`): Pillow crops the source at the rounded box, resizes it to `object_px` (380)
and pastes it at the centre of the `canvas_px` (512) canvas the backend's camera sees. A canvas pixel c therefore
comes from the source pixel x0 + (c - (canvas - object) / 2) · side / object: the plate camera keeps the canvas
camera's pose, its focal length scales by side / object and its principal point is the box's centre.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import placement as placements

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr")
MOVIE_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
SENSOR_WIDTH_MM = 36.0


def canvas_camera(meta: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """-> world->camera (4, 4) OpenCV view matrix, K (3, 3) and the canvas size in pixels, in the space the
    footage camera sees (placement.result_to_footage). Reads the matrices when the metadata has them (the
    backend's Cameras.to_json: `viewmats`, `Ks`, `width`), else the orbit description (azimuth 0 is the front,
    on the -Y side, looking at the origin)."""
    cam = meta.get("camera")
    canvas = int((meta.get("crop") or {}).get("canvas_px", 512))
    if not cam:
        raise ValueError("the result records no footage camera")
    if "viewmats" in cam and "Ks" in cam:
        view = np.asarray(cam["viewmats"], float).reshape(-1, 4, 4)[0]
        return view, np.asarray(cam["Ks"], float).reshape(-1, 3, 3)[0], int(cam.get("width", canvas))
    a, e, r = (math.radians(cam.get("azimuth_deg", 0.0)), math.radians(cam.get("elevation_deg", 0.0)),
               float(cam["radius"]))
    position = r * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-8 else np.array([1.0, 0.0, 0.0])
    down = np.cross(forward, right)
    view = np.eye(4)
    view[:3, :3] = np.stack([right, down, forward])
    view[:3, 3] = -view[:3, :3] @ position
    f = 0.5 * canvas / math.tan(math.radians(cam["fov_x_deg"]) / 2)
    return view, np.array([[f, 0.0, canvas / 2], [0.0, f, canvas / 2], [0.0, 0.0, 1.0]]), canvas


def plate_camera(meta: dict) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """-> world->camera (4, 4), K (3, 3) in source pixels and the source (width, height)."""
    view, K, canvas = canvas_camera(meta)
    crop, footage = meta.get("crop"), meta.get("footage")
    if not crop or not footage:
        raise ValueError("the result records no crop or footage size")
    x0, y0, x1, y1 = (round(v) for v in crop["box"])      # Pillow crops at the rounded box
    k = (x1 - x0) / float(crop.get("object_px", 380))     # source pixels per canvas pixel
    pad = (canvas - float(crop.get("object_px", 380))) / 2
    to_source = np.array([[k, 0.0, x0 - pad * k], [0.0, k, y0 - pad * k], [0.0, 0.0, 1.0]])
    width, height = (int(v) for v in footage["source_size"])
    return view, to_source @ K, (width, height)


def _blender_pose(view: np.ndarray) -> np.ndarray:
    """OpenCV world->camera -> Blender camera matrix_world (camera looks along -Z, +Y up)."""
    m = np.eye(4)
    m[:3, :3] = view[:3, :3].T @ np.diag([1.0, -1.0, -1.0])
    m[:3, 3] = -view[:3, :3].T @ view[:3, 3]
    return m


def create_footage_camera(meta: dict, name: str = "GVF4D Footage Camera", placement: str = "AUTO",
                          collection=None, frame_start: int = 1, background: bool = True):
    """A camera object that sees the result as the footage does, for an object imported with the same
    placement. Its intended resolution is stored as `gvf4d_resolution` (apply it with match_scene). The plate
    becomes its background image when the footage path is readable."""
    view, K, (width, height) = plate_camera(meta)
    data = bpy.data.cameras.new(name)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = SENSOR_WIDTH_MM
    data.lens = K[0, 0] * SENSOR_WIDTH_MM / width
    # with a horizontal sensor fit Blender's shift is in image widths; +y is up, pixel rows go down
    data.shift_x = (width / 2 - K[0, 2]) / width
    data.shift_y = (K[1, 2] - height / 2) / width
    world = placements.footage_to_world(meta, placement) @ _blender_pose(view)
    scale = np.cbrt(abs(np.linalg.det(world[:3, :3])))
    world[:3, :3] /= scale                                  # a camera object keeps unit scale
    distance = np.linalg.norm(view[:3, 3]) * scale
    data.clip_start, data.clip_end = 0.01 * distance, 100.0 * distance
    obj = bpy.data.objects.new(name, data)
    obj.matrix_world = Matrix(world.tolist())
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj["gvf4d_resolution"] = (width, height)
    if background:
        add_plate(obj, meta, frame_start)
    return obj


def _numbered_files(folder: Path, suffix: str | None = None) -> list[Path]:
    """Image files of a folder in the backend's order (natural sort of the names)."""
    key = lambda p: [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and (suffix is None or p.suffix.lower() == suffix)), key=key)


def add_plate(camera_obj, meta: dict, frame_start: int = 1):
    """The footage as the camera's background image, result frame 0 on scene frame `frame_start`. Returns the
    background image entry, or None when the footage is not readable here. Footage taken with a stride above 1
    plays at the source's rate, so it drifts from the result after frame 0."""
    footage = meta.get("footage") or {}
    path = Path(footage.get("path") or "")
    first_index = int((footage.get("frame_indices") or [0])[0])
    if path.is_file() and path.suffix.lower() in MOVIE_SUFFIXES:
        image = bpy.data.images.load(str(path), check_existing=True)
        image.source = "MOVIE"
        offset, count = first_index, int(footage.get("frame_end", first_index)) + 1
    elif path.exists() and (path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES):
        files = _numbered_files(path) if path.is_dir() else _numbered_files(path.parent, path.suffix.lower())
        if path.is_file():   # one image of a sequence: its siblings with the same name apart from the number
            stem = re.sub(r"\d+$", "", path.stem)
            files = [p for p in files if re.sub(r"\d+$", "", p.stem) == stem]
        if first_index >= len(files):
            return None
        first = files[first_index]
        number = re.search(r"(\d+)$", first.stem)
        image = bpy.data.images.load(str(first), check_existing=True)
        image.source = "SEQUENCE"
        # Blender shows file number (scene frame - frame_start + 1 + offset)
        offset, count = (int(number.group(1)) - 1 if number else 0), len(files) - first_index
    else:
        return None
    data = camera_obj.data
    bg = data.background_images.new()
    bg.image = image
    bg.image_user.frame_start = frame_start
    bg.image_user.frame_offset = offset
    bg.image_user.frame_duration = count
    bg.alpha = 1.0
    bg.frame_method = "STRETCH"
    data.show_background_images = True
    return bg


def frame_range(meta: dict, frame_start: int = 1) -> tuple[int, int]:
    """The scene frames the result covers when its frame 0 lands on frame_start."""
    step = max(1, int((meta.get("footage") or {}).get("stride", 1)))
    return frame_start, frame_start + (int(meta["frame_count"]) - 1) * step


def scene_fps(meta: dict) -> tuple[int, float]:
    """(fps, fps_base) for Blender, whose rate is fps / fps_base: [30000, 1001] -> (30, 1.001)."""
    numerator, denominator = meta.get("fps_rational") or (float(meta["fps"]), 1)
    whole = max(1, round(numerator / denominator))
    return whole, whole * denominator / numerator


def match_scene(scene, meta: dict, frame_start: int = 1, resolution: bool = True, frames: bool = True,
                fps: bool = True) -> None:
    """Sets the scene's resolution (the footage's size), frame range and fps from the result. Only on request:
    the import never calls it by itself."""
    if resolution and (meta.get("footage") or {}).get("source_size"):
        scene.render.resolution_x, scene.render.resolution_y = (int(v) for v in meta["footage"]["source_size"])
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    if frames:
        scene.frame_start, scene.frame_end = frame_range(meta, frame_start)
    if fps:
        scene.render.fps, scene.render.fps_base = scene_fps(meta)
