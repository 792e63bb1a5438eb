"""Where an imported result goes in the scene, from its metadata (numpy only).

A result's values live in its own space. The backend made it from the artist's asset by normalising it
(`coordinates.normalisation`: normalised = (original - centre) · scale), turning it about +Z by -azimuth
(`canonical.facing`), and, when `canonical.alignment.applied` is true, scaling and offsetting it to the footage
(aligned = p · scale + offset). With `applied: false` (the gvf engine) the alignment was only recorded: the
footage camera sees the result after it. Matrices here are (4, 4) and act on column vectors.
"""
from __future__ import annotations

import math

import numpy as np

PLACEMENTS = ("AUTO", "ASSET", "ORIGIN")
ASSET_SOURCES = ("mesh", "splat")


def similarity(scale: float = 1.0, offset=(0.0, 0.0, 0.0), rotation_z_deg: float = 0.0) -> np.ndarray:
    """p -> Rz(angle) · p · scale + offset."""
    a = math.radians(rotation_z_deg)
    m = np.eye(4)
    m[:3, :3] = scale * np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    m[:3, 3] = offset
    return m


def _alignment(meta: dict) -> tuple[np.ndarray, bool]:
    """The alignment as a matrix and whether the stored values already include it."""
    a = (meta.get("canonical") or {}).get("alignment")
    if not a:
        return np.eye(4), True
    return similarity(float(a["scale"]), a["offset"]), bool(a.get("applied", True))


def result_to_footage(meta: dict) -> np.ndarray:
    """The stored values -> the space the footage camera sees (the recorded alignment when it was not applied)."""
    m, applied = _alignment(meta)
    return np.eye(4) if applied else m


def result_to_asset(meta: dict) -> np.ndarray:
    """The stored values -> the artist's asset's own space (alignment, facing and normalisation undone)."""
    m, applied = _alignment(meta)
    canonical = meta.get("canonical") or {}
    facing = canonical.get("facing") or canonical.get("alignment") or {}   # the fit engine repeats it in alignment
    azimuth = float(facing.get("azimuth_deg", 0.0))
    norm = (meta.get("coordinates") or {}).get("normalisation") or {"centre": (0.0, 0.0, 0.0), "scale": 1.0}
    denormalise = similarity(1.0 / float(norm["scale"]), norm["centre"])
    return denormalise @ similarity(rotation_z_deg=azimuth) @ (np.linalg.inv(m) if applied else np.eye(4))


def resolve(meta: dict, placement: str = "AUTO") -> str:
    """AUTO: ASSET when the canonical came from the artist's mesh or splat, ORIGIN otherwise."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} is not one of {PLACEMENTS}")
    if placement != "AUTO":
        return placement
    return "ASSET" if (meta.get("canonical") or {}).get("source") in ASSET_SOURCES else "ORIGIN"


def object_matrix(meta: dict, placement: str = "AUTO") -> np.ndarray:
    """The imported object's matrix_world. ORIGIN: where the footage camera sees it (the result's own space,
    with an unapplied alignment applied); ASSET: where the artist's asset was."""
    return result_to_asset(meta) if resolve(meta, placement) == "ASSET" else result_to_footage(meta)


def footage_to_world(meta: dict, placement: str = "AUTO") -> np.ndarray:
    """Maps the footage camera's space into the scene, so that the camera sees the object as the footage does."""
    return object_matrix(meta, placement) @ np.linalg.inv(result_to_footage(meta))
