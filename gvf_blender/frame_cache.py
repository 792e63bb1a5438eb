"""A result's per-frame tracks as files the splat's node group reads at the scene frame (numpy only, no bpy).

A long shot's tracks are too large to embed in the .blend (200k Gaussians × 300 frames is 3.4 GB as point
attributes), so the import can reference them instead: one small binary PLY per result frame in a folder beside
the result (`take.gvf4d` -> `take.frames/frame_0000.ply`), which Blender's Import PLY geometry node loads from a
path built from the scene time. Each file holds the activated values of the tracks the result has: x y z
(position, float32), gvf_rw gvf_rx gvf_ry gvf_rz (unit rotation), gvf_sx gvf_sy gvf_sz (scale), gvf_o (opacity),
gvf_cr gvf_cg gvf_cb (the SH-DC colour as a display value), these as uint16 over the fixed ranges of QUANTISED
(the node group maps them back; Blender reads them as floats), 34 bytes a Gaussian instead of 56. `cache.json`,
written last, names the result the folder was made from (size, modification time, N, T, format): a folder that
matches is reused, anything else is rebuilt.
One writer at a time per folder in this process (the import operator and the jobs' writer thread may meet there);
a save waits for the writers (`wait_for_writers`) before it moves folders.
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .atomic_file import TEMP_SUFFIX, atomic_output
from .result_file import GVF4DFile

FORMAT_VERSION = 2
MANIFEST = "cache.json"
FRAME_FILE = "frame_{:04d}.ply"
FRAME_FILE_NODES = "frame_{t:04}.ply"   # the same name as the node group's Format String node builds it
SH_C0 = 0.28209479177387814
WRITER_THREADS = min(4, os.cpu_count() or 1)

# track -> (the result's tensor, the PLY properties holding it)
TRACK_PROPERTIES = {
    "position": ("frames.position", ("x", "y", "z")),
    "rotation": ("frames.rotation", ("gvf_rw", "gvf_rx", "gvf_ry", "gvf_rz")),
    "scale": ("frames.scale", ("gvf_sx", "gvf_sy", "gvf_sz")),
    "opacity": ("frames.opacity", ("gvf_o",)),
    "color": ("frames.sh_dc", ("gvf_cr", "gvf_cg", "gvf_cb")),
}


def folder_for(result) -> Path:
    """The frame folder of a result file: beside it, named after it."""
    result = Path(result)
    return result.with_name(result.stem + ".frames")


def unit_quaternions(q) -> np.ndarray:
    """(N, 4) w-x-y-z normalised (half-precision tracks store them only nearly unit)."""
    q = np.asarray(q, dtype=np.float32)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def display_rgb(sh_dc) -> np.ndarray:
    """SH DC (N, 3) -> display rgb (N, 3), unclamped (the node groups clamp after adding the view-dependent bands)."""
    return 0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float32)


ACTIVATIONS = {"rotation": unit_quaternions, "color": display_rgb}

# track -> (low, high, logarithmic): its values stored as uint16 steps over [low, high] (of their logarithm for
# scales, so small and large Gaussians get the same relative step: 0.03%); values outside are clamped (scales
# below e^-18 ~ 1.5e-8 of the object's size draw nothing anyway). Positions stay float32.
QUANTISED = {"rotation": (-1.0, 1.0, False), "scale": (-18.0, 4.0, True), "opacity": (0.0, 1.0, False),
             "color": (-1.0, 2.0, False)}
STEPS = 65535


def quantise(track: str, values: np.ndarray) -> np.ndarray:
    """A track's activated values (N, C) -> uint16 steps (N, C) over QUANTISED[track]."""
    low, high, log = QUANTISED[track]
    v = np.log(np.maximum(values, 1e-30)) if log else values
    return np.rint(np.clip((v - low) / (high - low), 0.0, 1.0) * STEPS).astype("<u2")


def dequantise(track: str, steps: np.ndarray) -> np.ndarray:
    """uint16 steps -> the values the node group computes from them, float32 (the inverse of `quantise`)."""
    low, high, log = QUANTISED[track]
    v = low + steps.astype(np.float32) * np.float32((high - low) / STEPS)
    return np.exp(v) if log else v


def tracks_of(f: GVF4DFile) -> list[str]:
    """The tracks the result has, in TRACK_PROPERTIES order."""
    return [track for track, (tensor, _) in TRACK_PROPERTIES.items() if f.has(tensor)]


def frame_values(f: GVF4DFile, track: str, t: int) -> np.ndarray:
    """Frame t of a track as the splat shows it: (N, C) float32, activated."""
    values = f.frame(TRACK_PROPERTIES[track][0], t)
    activation = ACTIVATIONS.get(track)
    return activation(values) if activation else values.reshape(len(values), -1)


def track_bytes(f: GVF4DFile) -> int:
    """Bytes of every frame of every track as float32: what embedding them in the .blend costs."""
    channels = sum(len(TRACK_PROPERTIES[track][1]) for track in tracks_of(f))
    return 4 * channels * f.num_gaussians * f.num_frames


def _identity(f: GVF4DFile) -> dict:
    stat = os.stat(f.path)
    return {"version": FORMAT_VERSION, "result_size": stat.st_size, "result_mtime_ns": stat.st_mtime_ns,
            "gaussians": f.num_gaussians, "frames": f.num_frames, "tracks": tracks_of(f)}


def is_current(folder, f: GVF4DFile) -> bool:
    """Whether `folder` holds every frame of this result, as written from its current file."""
    try:
        recorded = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _identity(f) and all((Path(folder) / FRAME_FILE.format(t)).is_file()
                                            for t in range(f.num_frames))


def write_frame(path, f: GVF4DFile, t: int) -> None:
    """One frame's PLY: binary little-endian, the properties in TRACK_PROPERTIES order, positions float32, the
    other tracks quantised (uint16). Rows are built as uint16 columns (a float32 is two of them)."""
    properties, columns = [], []
    for track in tracks_of(f):
        values = frame_values(f, track, t)
        kind = "ushort" if track in QUANTISED else "float"
        properties += [f"property {kind} {name}" for name in TRACK_PROPERTIES[track][1]]
        columns.append(quantise(track, values) if track in QUANTISED else values.astype("<f4").view("<u2"))
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {f.num_gaussians}",
                        *properties, "end_header"]) + "\n"
    with atomic_output(path) as out:
        out.write(header.encode("ascii"))
        out.write(np.concatenate(columns, axis=1).tobytes())


_writers: dict[Path, threading.Lock] = {}      # folder -> held while a thread writes it
_writers_lock = threading.Lock()


def _writer(folder: Path) -> threading.Lock:
    with _writers_lock:
        return _writers.setdefault(Path(os.path.abspath(folder)), threading.Lock())


def wait_for_writers() -> None:
    """Returns once no thread of this process writes a frame folder."""
    with _writers_lock:
        locks = list(_writers.values())
    for lock in locks:
        with lock:
            pass


def write(f: GVF4DFile, progress=None) -> Path:
    """The frame folder of the result (`folder_for` its file): reused when current, else written frame by frame
    (temp files an interrupted writer left removed first), the manifest last; a writer already at it is waited
    for. progress(t, T) is called after each frame. Returns the folder."""
    folder = folder_for(f.path)
    with _writer(folder):
        if is_current(folder, f):
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MANIFEST).unlink(missing_ok=True)
            for stale in folder.glob(f".*{TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
            with ThreadPoolExecutor(WRITER_THREADS) as pool:    # numpy and file writes release the GIL
                frames = pool.map(lambda t: write_frame(folder / FRAME_FILE.format(t), f, t), range(f.num_frames))
                for done, _ in enumerate(frames, start=1):         # in this thread: progress may call bpy
                    if progress:
                        progress(done, f.num_frames)
            with atomic_output(folder / MANIFEST) as out:
                out.write(json.dumps(_identity(f), indent=1).encode())
        except OSError as e:
            raise OSError(f"{f.path}: cannot write its frame folder {folder}: {e.strerror or e}") from e
    return folder
