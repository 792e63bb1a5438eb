"""What a footage -> .gvf4d run is asked to do (the CLI's generate/submit flags and the service's job JSON)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..canonical.exact import ExactCanonical
from ..engines.fit import FitSettings
from .gvf import GVFSettings

ENGINES = ("fit", "gvf")
CANONICAL_SOURCES = ("trellis", "mesh", "splat")
EXPORTS = ("ply", "glb", "preview")


@dataclass
class GenerateRequest:
    footage: Path
    out: Path
    canonical: tuple[str, Optional[Path]]          # ("trellis", None) | ("mesh", path) | ("splat", path)
    engine: str = "fit"
    weights: Optional[Path] = None
    frames: Optional[int] = None                   # at most this many of the frames [start:end:stride] (None: all)
    start: int = 0
    end: Optional[int] = None
    stride: int = 1
    matte: str = "auto"
    fps: Optional[float] = None
    device: str = "auto"
    fit_size: int = 128
    fit: FitSettings = field(default_factory=FitSettings)
    gvf: Optional[GVFSettings] = None
    refine: int = 0                                 # gvf engine: fit steps per frame refining its result (0: off)
    azimuth_step: Optional[float] = None            # search the canonical's facing in steps of this (0: off;
                                                    # None: 1 degree for trellis as published, off for the artist's asset)
    mesh: bool = False                              # extract a mesh and its per-frame deformation into the result
    mesh_faces: int = 20_000
    mesh_samples: int = 100_000                     # Gaussians sampled on an artist's mesh
    exports: tuple[str, ...] = ()
    exact: Optional[ExactCanonical] = None          # the splat is an earlier result's canonical, used as it is
    recorded_footage: Optional[Path] = None         # the result's footage.path when `footage` is a copy (on a Ray
                                                    # actor's node, an upload): the client's path (None: footage)

    def __post_init__(self):
        self.gvf = self.gvf or GVFSettings()
        kind, path = self.canonical
        if kind not in CANONICAL_SOURCES:
            raise ValueError(f"unknown canonical source {kind!r} (available: {', '.join(CANONICAL_SOURCES)})")
        if kind != "trellis" and path is None:
            raise ValueError(f"--canonical {kind} needs a file: --canonical {kind} PATH")
        if self.exact is not None and kind != "splat":
            raise ValueError(f"a canonical given exactly is a splat file, not {kind!r}")
        if self.azimuth_step is None:
            self.azimuth_step = 1.0 if kind == "trellis" else 0.0
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r} (available: {', '.join(ENGINES)})")
        bad = [e for e in self.exports if e not in EXPORTS]
        if bad:
            raise ValueError(f"unknown exports {bad} (available: {', '.join(EXPORTS)})")
