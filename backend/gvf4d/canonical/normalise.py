"""Placing a canonical splat where the published model expects objects: centred, inside the unit cube."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..representations import Gaussians


@dataclass
class Normalisation:
    """normalised = (original - centre) * scale."""

    centre: tuple[float, float, float]
    scale: float

    def to_json(self) -> dict:
        return {"centre": list(self.centre), "scale": self.scale, "meaning": "normalised = (original - centre) * scale"}


def normalise_to_unit_cube(g: Gaussians, extent: float = 1.0) -> tuple[Gaussians, Normalisation]:
    """Centres the splat's bounding box at the origin and scales its longest side to `extent`."""
    lo, hi = g.means.min(0).values, g.means.max(0).values
    centre = (lo + hi) / 2
    side = float((hi - lo).max())
    scale = extent / side if side > 0 else 1.0
    out = replace(g, means=(g.means - centre) * scale, scales=g.scales * scale)
    return out, Normalisation(tuple(float(c) for c in centre), scale)
