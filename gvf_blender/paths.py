"""Paths as the add-on stores them in the .blend: '//…' relative to the .blend's folder when the file lies below
it (the project folder can move), absolute otherwise (an unsaved .blend, or footage on another drive or share).

Each function takes the .blend's path; left out, the open .blend's (`bpy.data.filepath`). The save handler passes
the path being saved to, which `bpy.data.filepath` only becomes after the save.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULTS_FOLDER = "gvf4d_results"


def _blend_dir(blend: str | None) -> Path | None:
    if blend is None:
        import bpy
        blend = bpy.data.filepath
    return Path(os.path.normpath(os.path.abspath(blend))).parent if blend else None


def to_absolute(stored: str, blend: str | None = None) -> Path:
    """The absolute path of a stored path ('//…' resolved against the .blend's folder)."""
    if stored.startswith("//"):
        folder = _blend_dir(blend)
        if folder is None:
            raise ValueError(f"{stored} is relative to a .blend file, and this one is not saved")
        return Path(os.path.normpath(folder / stored[2:]))
    return Path(os.path.normpath(os.path.abspath(stored)))


def to_stored(path: str | Path, blend: str | None = None) -> str:
    """'//…' (forward slashes) when path lies below the .blend's folder, else the absolute path."""
    path = to_absolute(str(path), blend)
    folder = _blend_dir(blend)
    if folder is not None:
        try:
            return "//" + path.relative_to(folder).as_posix()
        except ValueError:                 # outside the folder, or on another drive
            pass
    return str(path)


def results_dir(blend: str | None = None) -> Path:
    """Where results are downloaded: //gvf4d_results beside the saved .blend, else the temporary folder (moved
    beside the .blend when it is first saved)."""
    folder = _blend_dir(blend)
    return (folder if folder is not None else unsaved_results_root()) / RESULTS_FOLDER


def unsaved_results_root() -> Path:
    return Path(os.path.normpath(os.path.abspath(tempfile.gettempdir())))
