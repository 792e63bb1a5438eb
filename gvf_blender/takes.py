"""Per-shot take history kept in the .blend (a JSON string property on the scene), so it is saved with the file.

A shot is identified by its footage path; each take records the settings, seed, time, job and result file.
"""
from __future__ import annotations

import json
import time

PROP = "gvf4d_takes"


def _load(scene) -> dict:
    try:
        return json.loads(scene.get(PROP, "{}"))
    except json.JSONDecodeError:
        return {}


def _save(scene, data: dict) -> None:
    scene[PROP] = json.dumps(data)


def takes(scene, shot: str) -> list[dict]:
    return _load(scene).get(shot, {}).get("takes", [])


def add_take(scene, shot: str, settings: dict, job_id: str, result: str = "") -> dict:
    data = _load(scene)
    entry = data.setdefault(shot, {"takes": [], "active": -1})
    take = {"index": len(entry["takes"]), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "job": job_id,
            "settings": settings, "seed": settings.get("seed"), "result": result, "state": "queued"}
    entry["takes"].append(take)
    _save(scene, data)
    return take


def update_take(scene, shot: str, index: int, **fields) -> None:
    data = _load(scene)
    data[shot]["takes"][index].update(fields)
    _save(scene, data)


def set_active(scene, shot: str, index: int) -> dict:
    data = _load(scene)
    entry = data[shot]
    if not 0 <= index < len(entry["takes"]):
        raise IndexError(f"shot {shot} has no take {index}")
    entry["active"] = index
    _save(scene, data)
    return entry["takes"][index]


def active(scene, shot: str) -> dict | None:
    entry = _load(scene).get(shot)
    if not entry or entry["active"] < 0:
        return None
    return entry["takes"][entry["active"]]
