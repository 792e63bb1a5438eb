"""Per-shot take history kept in the .blend (a JSON string property on the scene), so it is saved with the file.

A shot is its footage. Its history is keyed by the footage's path as `paths.to_stored` writes it (relative to the
.blend when the footage lies below its folder, so moving the project folder keeps it) and records the footage's
name and size, which still recognise footage moved on its own. Functions take the footage's absolute path or a
history key. Each take records the settings, seed, time, job, state and result file (a stored path).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from . import frame_cache, paths

PROP = "gvf4d_takes"
UNFINISHED = ("queued", "running", "interrupted")    # interrupted: its backend stopped; it may be run again


def _load(scene) -> dict:
    try:
        return json.loads(scene.get(PROP, "{}"))
    except json.JSONDecodeError:
        return {}


def _save(scene, data: dict) -> None:
    scene[PROP] = json.dumps(data)


_identities: dict[str, tuple[float, dict | None]] = {}    # footage path -> (its mtime, identity)


def identity(footage: Path) -> dict | None:
    """{"name", "size"}: a file's name and size, or an image folder's name and the sum of its files' sizes;
    None when the footage is missing. Cached per path while its modification time holds."""
    try:
        mtime = footage.stat().st_mtime
    except OSError:
        return None
    cached = _identities.get(str(footage))
    if cached and cached[0] == mtime:
        return cached[1]
    if footage.is_dir():
        size = sum(e.stat().st_size for e in os.scandir(footage) if e.is_file() and not e.name.startswith("."))
    else:
        size = footage.stat().st_size
    ident = {"name": footage.name, "size": size}
    _identities[str(footage)] = (mtime, ident)
    return ident


def _absolute(key: str, blend: str | None = None) -> Path | None:
    try:
        return paths.to_absolute(key, blend)
    except ValueError:                # a relative key while the .blend is not saved
        return None


def _find(data: dict, footage: str) -> str | None:
    """The key of the footage's history: its own key, a key naming the same file, else one whose recorded name
    and size match the footage's (moved footage); None when it has none."""
    target = _absolute(footage)
    if target is None:
        return footage if footage in data else None
    key = paths.to_stored(target)
    if key in data:
        return key
    for k in data:
        if _absolute(k) == target:
            return k
    ident = identity(target)
    if ident is not None:
        for k, entry in data.items():
            if entry.get("footage") == ident:
                return k
    return None


def key_of(scene, footage: str) -> str | None:
    """The key the footage's history is stored under (also its imported objects' `gvf4d_shot`), None if none."""
    return _find(_load(scene), footage)


def takes(scene, footage: str) -> list[dict]:
    data = _load(scene)
    key = _find(data, footage)
    return data[key]["takes"] if key is not None else []


def active(scene, footage: str) -> dict | None:
    data = _load(scene)
    key = _find(data, footage)
    if key is None or data[key]["active"] < 0:
        return None
    return data[key]["takes"][data[key]["active"]]


def _rekey_objects(scene, old: str, new: str) -> None:
    for obj in scene.objects:
        if obj.get("gvf4d_shot") == old:
            obj["gvf4d_shot"] = new


def add_take(scene, footage: str, settings: dict, job_id: str, result: str = "") -> dict:
    """Records a new take of the footage's shot (its history moved to the footage's current key first)."""
    data = _load(scene)
    target = paths.to_absolute(footage)
    key, found = paths.to_stored(target), _find(data, footage)
    if found is not None and found != key:
        data[key] = data.pop(found)
        _rekey_objects(scene, found, key)
    entry = data.setdefault(key, {"takes": [], "active": -1})
    entry["footage"] = identity(target) or entry.get("footage")
    take = {"index": len(entry["takes"]), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "job": job_id,
            "settings": settings, "seed": settings.get("seed"), "result": result, "state": "queued"}
    entry["takes"].append(take)
    _save(scene, data)
    return take


def update_take(scene, footage: str, index: int, **fields) -> None:
    data = _load(scene)
    data[_find(data, footage)]["takes"][index].update(fields)
    _save(scene, data)


def set_active(scene, footage: str, index: int) -> dict:
    data = _load(scene)
    key = _find(data, footage)
    if key is None:
        raise KeyError(f"no takes of {footage}")
    entry = data[key]
    if not 0 <= index < len(entry["takes"]):
        raise IndexError(f"shot {footage} has no take {index}")
    entry["active"] = index
    _save(scene, data)
    return entry["takes"][index]


def find_job(scene, job_id: str) -> tuple[str, dict] | None:
    """(shot key, take) of the take made by this job, None when the scene has none."""
    for key, entry in _load(scene).items():
        for take in entry["takes"]:
            if take["job"] == job_id:
                return key, take
    return None


def to_follow(scene) -> list[str]:
    """The jobs of the scene's takes that may still change: queued, running or interrupted when last seen, or
    done but not downloaded (Blender was closed meanwhile)."""
    return [take["job"] for entry in _load(scene).values() for take in entry["takes"]
            if take["job"] and (take["state"] in UNFINISHED or (take["state"] == "done" and not take.get("result")))]


def to_import(scene) -> list[str]:
    """The jobs of the takes downloaded but not yet imported (Blender closed while their frame folder was
    written)."""
    return [take["job"] for entry in _load(scene).values() for take in entry["takes"]
            if take["job"] and take["state"] == "done" and take.get("result") and take.get("importing")]


def _transfer(src: Path, dest: Path, move: bool) -> None:
    """Moves a result and its frame folder (a referenced import's tracks) to dest, replacing what is there, or
    copies what is not there."""
    for a, b in ((src, dest), (frame_cache.folder_for(src), frame_cache.folder_for(dest))):
        if not a.exists():
            continue
        if move:
            if b.is_dir():
                shutil.rmtree(b)            # else the folder would move into it
            shutil.move(a, b)
        elif not b.exists():
            (shutil.copytree if a.is_dir() else shutil.copy2)(a, b)


def relocate(scene, old_blend: str, new_blend: str, transfer: bool = True) -> dict[Path, Path]:
    """Keeps the scene's history valid when the .blend is saved as new_blend (a first save, Save As): with
    `transfer`, results made before the first save move from the temporary folder into the new
    //gvf4d_results/, and those in the old //gvf4d_results/ are copied there; every key and result is then
    stored again for new_blend. Returns the results moved or copied (old absolute path -> new one)."""
    data = _load(scene)
    if not data:
        return {}
    unsaved = paths.results_dir("")
    old_results = paths.results_dir(old_blend) if old_blend else None
    new_results = paths.results_dir(new_blend)
    moved, relocated = {}, {}
    for key, entry in data.items():
        footage = _absolute(key, old_blend)
        new_key = paths.to_stored(footage, new_blend) if footage is not None else key
        for take in entry["takes"]:
            if not take.get("result"):
                continue
            src = _absolute(take["result"], old_blend)
            if src is None:
                continue
            dest = src
            if transfer and src.parent in (unsaved, old_results) and src.parent != new_results and src.is_file():
                dest = new_results / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                _transfer(src, dest, move=src.parent == unsaved)
                moved[src] = dest
            take["result"] = paths.to_stored(dest, new_blend)
        if new_key in relocated or new_key in data and new_key != key:
            new_key = key                  # another history already has that key: this one keeps its own
        relocated[new_key] = entry
        if new_key != key:
            _rekey_objects(scene, key, new_key)
    _save(scene, relocated)
    return moved
