"""One request validation for the API and the CLI (docs/design.md §2): every input is checked before any work.

Numbers are finite and in range, paths name regular files or folders (never devices, FIFOs or sockets, which
would be read forever), names follow the file-name rules, and counts stay within the budgets of `limits.py`.
A refusal is a `RequestError` with a one-line message naming the input and the problem; the API answers it with
its `status` (422, 413 for a budget, 507 for disk space), the CLI prints it and exits 2.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

from .limits import Limits

if TYPE_CHECKING:
    from .canonical.exact import ExactCanonical
    from .pipelines.render import RenderRequest
    from .pipelines.request import GenerateRequest
    from .rendering.blender_camera import BlenderCamera

NAME_MAX_BYTES = 255                  # one path component (ext4, APFS, NTFS)
PATH_MAX_BYTES = 4096                 # a whole path (Linux PATH_MAX)
FREE_SPACE_RESERVE = 512 * 2**20      # a job or upload is refused when it would leave less free space than this
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class RequestError(ValueError):
    """An input refused before any work; `status` is the HTTP status the API answers it with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def is_disk_full(error: BaseException) -> bool:
    """Whether an OSError says the disk (or the quota, or the process's file-size limit) is full."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def finite(label: str, value, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False) -> float:
    """value as a float, refused unless finite and within [low, high] (low excluded when low_open)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(f"{label} must be a finite number, got {value!r}")
    if low is not None and (number <= low if low_open else number < low):
        raise RequestError(f"{label} must be {'greater than' if low_open else 'at least'} {low:g}, got {value!r}")
    if high is not None and number > high:
        raise RequestError(f"{label} must be at most {high:g}, got {value!r}")
    return number


def count(label: str, value, low: int, high: Optional[int] = None) -> int:
    """value as a whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{label} must be a whole number, got {value!r}")
    if value < low:
        raise RequestError(f"{label} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise RequestError(f"{label} must be at most {high}, got {value}")
    return value


def within_budget(limits: Limits, name: str, label: str, value: int) -> int:
    """value within the budget `name` of limits (a field such as "max_frames"), else refused as too large (413)."""
    over = limits.exceeded(name, value)
    if over:
        raise RequestError(f"{label} {value:,} is {over}", status=413)
    return value


def ply_element_count(path: Path, element: str) -> Optional[int]:
    """The count of an element ("vertex", "face") a PLY file's header declares (None when it has no readable
    header or no such element), read without the data."""
    with open_regular_file(path) as f:
        header = f.read(1 << 16).split(b"end_header", 1)[0]
    if not header.startswith(b"ply"):
        return None
    for line in header.splitlines():
        words = line.split()
        if words[:2] == [b"element", element.encode()] and len(words) == 3 and words[2].isdigit():
            return int(words[2])
    return None


def ply_vertex_count(path: Path) -> Optional[int]:
    return ply_element_count(path, "vertex")


def _glb_triangles(path: Path, f: BinaryIO) -> Optional[int]:
    """Triangles of a GLB's mesh primitives, from its JSON chunk: per primitive its index (else vertex) count n,
    n / 3 for triangle lists, n - 2 for strips and fans, none for points and lines."""
    head = f.read(20)
    if len(head) < 20 or head[:4] != b"glTF" or head[16:20] != b"JSON":
        return None
    length = int.from_bytes(head[12:16], "little")
    if length > 64 * 2**20:
        raise RequestError(f"{path}: its glTF JSON chunk ({length:,} bytes) is larger than 64 MiB")
    try:
        doc = json.loads(f.read(length))
        accessors = doc.get("accessors", [])
        triangles = 0
        for p in (p for mesh in doc.get("meshes", []) for p in mesh.get("primitives", [])):
            n = int(accessors[p["indices"] if "indices" in p else p["attributes"]["POSITION"]]["count"])
            mode = p.get("mode", 4)
            triangles += n // 3 if mode == 4 else max(n - 2, 0) if mode in (5, 6) else 0
        return triangles
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise RequestError(f"{path}: its glTF JSON chunk cannot be read") from None


def mesh_face_count(path: Path) -> Optional[int]:
    """The faces a mesh file declares, read from its header without the data: a PLY's faces (polygons), a binary
    STL's or a GLB's triangles; None for formats with no count in a header (OBJ, glTF with separate buffers)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        return ply_element_count(path, "face")
    with open_regular_file(path) as f:
        if suffix == ".glb":
            return _glb_triangles(path, f)
        if suffix == ".stl":
            head = f.read(84)
            count = int.from_bytes(head[80:84], "little") if len(head) == 84 else None
            # a binary STL is 84 bytes + 50 a triangle; an ASCII one says "solid" and does not match
            return count if count is not None and os.fstat(f.fileno()).st_size == 84 + 50 * count else None
    return None


def check_name(label: str, name: str) -> str:
    """A file name the backend writes: not empty, not hidden, no NUL or folder separators, at most 255 bytes."""
    if not name or name in (".", ".."):
        raise RequestError(f"{label} {name!r} is not a file name")
    if "\0" in name:
        raise RequestError(f"{label} {name!r} contains a NUL byte")
    if "/" in name or "\\" in name:
        raise RequestError(f"{label} {name!r} must be a plain file name (no folders)")
    if name.startswith("."):
        raise RequestError(f"{label} {name!r} would be a hidden file (it starts with '.')")
    if len(os.fsencode(name)) > NAME_MAX_BYTES:
        raise RequestError(f"{label} {name[:40]!r}...: the name is longer than {NAME_MAX_BYTES} bytes")
    return name


def check_path_text(label: str, path) -> Path:
    """A path's text: no NUL byte, each component at most 255 bytes, the whole at most 4096 bytes."""
    text = os.fspath(path)
    shown = text if len(text) <= 80 else text[:77] + "..."
    if "\0" in text:
        raise RequestError(f"{label} {shown!r} contains a NUL byte")
    if len(os.fsencode(text)) > PATH_MAX_BYTES:
        raise RequestError(f"{label} {shown}: the path is longer than {PATH_MAX_BYTES} bytes")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise RequestError(f"{label} {shown}: the component {part[:40]!r}... is longer than "
                               f"{NAME_MAX_BYTES} bytes")
    return Path(text)


def _stat(label: str, path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise RequestError(f"{label} {path} does not exist") from None
    except OSError as e:
        raise RequestError(f"{label} {path}: {e.strerror or e}") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _existing(label: str, path, is_kind, kind: str) -> Path:
    path = check_path_text(label, path)
    mode = _stat(label, path).st_mode
    if not is_kind(mode):
        raise RequestError(f"{label} {path} is {_kind(mode)}, not {kind}")
    return path


def existing_file(label: str, path) -> Path:
    """path names a regular file (a symlink to one is followed)."""
    return _existing(label, path, stat.S_ISREG, "a regular file")


def existing_folder(label: str, path) -> Path:
    return _existing(label, path, stat.S_ISDIR, "a folder")


def _regular_entries(label: str, folder: Path, suffixes: set[str]) -> None:
    """Every entry of folder with one of `suffixes` is a regular file (a FIFO named frame_0001.png would block
    its reader forever)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise RequestError(f"{label} {folder}: {e.strerror or e}") from None
    for entry in entries:
        if Path(entry.name).suffix.lower() in suffixes:
            try:
                mode = entry.stat().st_mode
            except OSError as e:
                raise RequestError(f"{label} {entry.path}: {e.strerror or e}") from None
            if not stat.S_ISREG(mode):
                raise RequestError(f"{label} {entry.path} is {_kind(mode)}, not a regular file")


def open_regular_file(path) -> BinaryIO:
    """path opened for reading, refused (RequestError) unless it is a regular file. The open does not wait for a
    FIFO's writer and the check is on the opened file, so a file swapped for a device after validation is caught."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RequestError(f"{path} is {_kind(mode)}, not a regular file")
    return os.fdopen(fd, "rb")


def check_footage(path) -> Path:
    """A video file, a folder of images, or one image of a numbered sequence, its images all regular files."""
    from .footage.reader import IMAGE_SUFFIXES
    path = check_path_text("footage", path)
    mode = _stat("footage", path).st_mode
    if stat.S_ISDIR(mode):
        _regular_entries("footage", path, IMAGE_SUFFIXES)
    elif stat.S_ISREG(mode):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            _regular_entries("footage", path.parent, IMAGE_SUFFIXES)
    else:
        raise RequestError(f"footage {path} is {_kind(mode)}, not a video file or a folder of images")
    return path


def check_output(label: str, path) -> Path:
    """A file to be written: its name follows the name rules and it is not an existing folder."""
    path = check_path_text(label, path)
    check_name(label, path.name)
    if path.is_dir():
        raise RequestError(f"{label} {path} is an existing folder; give a file name such as {path / 'result.gvf4d'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RequestError(f"{label} {path}: {parent} is not a folder")
            break
    return path


def check_free_space(folder, reserve: int = FREE_SPACE_RESERVE, needed: int = 0, label: str = "the backend's disk"):
    """Refuses (507) when writing `needed` bytes under folder would leave less than `reserve` free."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free - needed < reserve:
        raise RequestError(f"{label} ({folder}) has {free / 2**30:.2f} GiB free; this needs "
                           f"{(needed + reserve) / 2**30:.2f} GiB", status=507)


def check_exact_canonical(exact: "ExactCanonical") -> None:
    """The space of a canonical given exactly: finite facing, offsets and centre, positive scales."""
    finite("facing", exact.facing_deg)
    finite("alignment scale", exact.alignment.scale, 0.0, low_open=True)
    finite("normalisation scale", exact.normalisation.scale, 0.0, low_open=True)
    for label, vector in (("alignment offset", exact.alignment.offset), ("normalisation centre",
                                                                           exact.normalisation.centre)):
        if len(vector) != 3:
            raise RequestError(f"{label} must have 3 numbers, got {len(vector)}")
        for value in vector:
            finite(label, value)


def check_request(req: "GenerateRequest", limits: Optional[Limits] = None, paths: bool = True) -> "GenerateRequest":
    """Checks every field of a generation request (and, with `paths`, the files it names) before any work."""
    limits = limits or Limits.from_env()
    if req.frames is not None:
        within_budget(limits, "max_frames", "frames", count("frames", req.frames, 1))
    count("start", req.start, 0)
    if req.end is not None:
        count("end", req.end, req.start + 1)
    count("stride", req.stride, 1)
    if req.fps is not None:
        finite("fps", req.fps, 0.0, 1000.0, low_open=True)
    count("fit size", req.fit_size, 16, 1024)
    count("fit iterations", req.fit.iterations, 1, 1000)
    count("seed", req.gvf.seed, 0, 2**31 - 1)
    count("steps", req.gvf.steps, 1, 1000)
    finite("guidance", req.gvf.guidance_scale)
    finite("guidance (second scale)", req.gvf.guidance_scale2)
    count("refine", req.refine, 0, 1000)
    if req.azimuth_step is not None:
        finite("azimuth step", req.azimuth_step, 0.0, 180.0)
    count("mesh faces", req.mesh_faces, 100, 2_000_000)
    within_budget(limits, "max_gaussians", "mesh samples", count("mesh samples", req.mesh_samples, 100))
    if "\0" in req.matte:
        raise RequestError(f"matte {req.matte!r} contains a NUL byte")
    if req.exact is not None:
        check_exact_canonical(req.exact)
    check_output("result", req.out)
    kind, canonical = req.canonical
    needs_weights = req.engine == "gvf" or kind == "trellis"
    if needs_weights and req.weights is None:
        raise RequestError("the gvf engine and the trellis canonical need a weights folder (with gvf/, dinov2/ and, "
                           "for trellis, trellis/)")
    if not paths:
        return req
    check_footage(req.footage)
    if canonical is not None:
        existing_file(f"canonical {kind}", canonical)
        if kind == "splat" and (gaussians := ply_vertex_count(canonical)) is not None:
            within_budget(limits, "max_gaussians", f"canonical splat {canonical}:", gaussians)
        if kind == "mesh" and (faces := mesh_face_count(canonical)) is not None:
            within_budget(limits, "max_mesh_faces", f"canonical mesh {canonical}:", faces)
    if req.weights is not None:
        existing_folder("weights", req.weights)
    method, _, masks = req.matte.partition(":")
    if method == "masks" and masks:
        from .footage.reader import IMAGE_SUFFIXES
        _regular_entries("masks", existing_folder("masks", masks), IMAGE_SUFFIXES)
    return req


def check_render_request(req: "RenderRequest", limits: Optional[Limits] = None, paths: bool = True,
                         cameras: Optional[list["BlenderCamera"]] = None) -> "RenderRequest":
    """Checks a render request (docs/render.md) before any work: blend, size and background, and, with `paths`,
    the result file, the frame range, the cameras against it and the frames' pixels within the budgets.
    cameras: the Blender cameras when they come with the request (the service's), else req.camera's file is read."""
    from .pipelines.render import BLENDS, blender_views, footage_view, parse_frame_range
    from .rendering.blender_camera import read_blender_cameras
    from .result import ResultFile
    limits = limits or Limits.from_env()
    if req.blend not in BLENDS:
        raise RequestError(f"blend {req.blend!r} is not one of {list(BLENDS)}")
    if req.size is not None:
        width, height = (count(f"size ({side})", v, 1) for side, v in zip(("width", "height"), req.size))
        within_budget(limits, "max_frame_pixels", f"size {width}x{height}:", width * height)
    if req.background is not None:
        for c in req.background:
            finite("background", c, 0.0, 1.0)
    if not paths:
        return req
    existing_file("result", req.result)
    try:
        f = ResultFile(req.result)
        within_budget(limits, "max_gaussians", f"result {req.result}:", f.num_gaussians)
        frames = parse_frame_range(req.frames, f.num_frames)
        within_budget(limits, "max_frames", "frames", len(frames))
        source = "camera" if cameras is not None else req.camera      # what a message about the cameras names
        if cameras is None and str(req.camera) != "footage":
            cameras = read_blender_cameras(req.camera)
        view = footage_view(f, req.size) if cameras is None else \
            blender_views(cameras, len(frames), req.size, source)[0]
    except RequestError:
        raise
    except ValueError as e:            # the result, the frame range or the cameras (ResultFileError, CameraFileError)
        raise RequestError(str(e)) from None
    width, height = view.camera.width, view.camera.height
    within_budget(limits, "max_frame_pixels", f"frame size {width}x{height}:", width * height)
    within_budget(limits, "max_shot_pixels", f"{len(frames)} frames of {width}x{height}:", width * height * len(frames))
    return req
