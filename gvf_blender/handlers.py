"""The add-on's file handlers. After a .blend is opened its unfinished takes are followed again. When it is saved
somewhere new (the first save, Save As), results made before the first save move into its //gvf4d_results/, and
the stored paths (take history keys, results, the imported objects' `gvf4d_path` and frame folders) are stored
again for it."""
from __future__ import annotations

import os

import bpy
from bpy.app.handlers import persistent

from . import frame_cache, importer, jobs, paths, takes


def _relocate(old_blend: str, new_blend: str, transfer: bool) -> None:
    moved = {}
    for scene in bpy.data.scenes:
        moved.update(takes.relocate(scene, old_blend, new_blend, transfer))
    for obj in bpy.data.objects:
        stored = obj.get("gvf4d_path")
        if obj.library is not None or not isinstance(stored, str):
            continue
        try:
            path = paths.to_absolute(stored, old_blend)
        except ValueError:
            continue
        path = moved.get(path, path)
        obj["gvf4d_path"] = paths.to_stored(path, new_blend)
        importer.refer_frames(obj, path, new_blend)


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


@persistent
def follow_opened_file(filepath, *_):
    """load_post: the previous file's takes are no longer in memory; this file's unfinished ones are followed."""
    jobs.stop_following()
    jobs.follow_open_file()


@persistent
def keep_results_with_blend(filepath, *_):
    """save_pre (filepath: where it is being saved): moves or copies the results (once no thread writes a frame
    folder) and re-stores the paths."""
    if not _same(bpy.data.filepath, filepath):
        frame_cache.wait_for_writers()
        _relocate(bpy.data.filepath, filepath, transfer=True)


@persistent
def after_save(filepath, *_):
    """save_post: a copy was saved (Save Copy) when the open file's path is not the saved one: the paths are
    stored again for the open file (the results stay where they are)."""
    if not _same(bpy.data.filepath, filepath):
        _relocate(filepath, bpy.data.filepath, transfer=False)


HANDLERS = (("load_post", follow_opened_file), ("save_pre", keep_results_with_blend), ("save_post", after_save))


def register() -> None:
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn not in handlers:
            handlers.append(fn)


def unregister() -> None:
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn in handlers:
            handlers.remove(fn)
