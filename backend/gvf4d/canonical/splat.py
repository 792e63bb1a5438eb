"""The artist's own 3DGS splat (.ply, standard layout, any SH degree) as the canonical splat."""
from __future__ import annotations

from pathlib import Path

from ..exporters.ply import read_splat_ply
from ..representations import Gaussians
from .normalise import Normalisation, normalise_to_unit_cube


def load_splat_canonical(path: str | Path) -> tuple[Gaussians, Normalisation]:
    return normalise_to_unit_cube(read_splat_ply(path))
