"""A canonical splat given exactly: the Gaussians of an earlier take's result, usually edited by the artist,
written in that result's space and used as they are — no normalisation, facing search or alignment.

The request carries how that space was made (the take's facing, alignment and normalisation); the run records
them again, so the new result is placed as the take was and can itself be rerun the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..exporters.ply import read_splat_ply
from ..representations import Gaussians
from .align import SilhouetteAlignment
from .normalise import Normalisation


@dataclass(frozen=True)
class ExactCanonical:
    """The space of the result the splat comes from.

    facing_deg: the take's facing (the values are already turned by it); alignment: the take's scale and offset
    to the footage, `alignment_applied` whether the values include it (fit engine, --refine) or not (gvf engine);
    normalisation: the artist's asset -> the normalised space, as the take recorded it.
    """

    facing_deg: float = 0.0
    alignment: SilhouetteAlignment = field(default_factory=lambda: SilhouetteAlignment(1.0, (0.0, 0.0, 0.0)))
    alignment_applied: bool = True
    normalisation: Normalisation = field(default_factory=lambda: Normalisation((0.0, 0.0, 0.0), 1.0))

    def load(self, path: str | Path) -> tuple[Gaussians, Normalisation]:
        """The file's Gaussians unchanged, and the take's normalisation."""
        return read_splat_ply(path), self.normalisation

    def footage_space(self, g: Gaussians) -> Gaussians:
        """The given Gaussians aligned to the footage (what the fit engine moves)."""
        return g if self.alignment_applied else self.alignment.apply(g)

    def model_space(self, g: Gaussians) -> Gaussians:
        """The given Gaussians before the alignment (the normalised, faced space the gvf engine samples in)."""
        return self.alignment.inverse().apply(g) if self.alignment_applied else g

    def facing(self) -> dict:
        """The result's "facing" record: the take's, not searched again."""
        return {"azimuth_deg": self.facing_deg, "scorer": None, "step_deg": 0.0, "given": True}

    def to_json(self) -> dict:
        return {"facing_deg": self.facing_deg, "alignment": self.alignment.to_json(),
                "alignment_applied": self.alignment_applied, "normalisation": self.normalisation.to_json()}
