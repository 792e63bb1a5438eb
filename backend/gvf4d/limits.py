"""The budgets that bound one request's work (docs/design.md §2), the same for the API and the CLI.

Each budget has a default, an environment variable `GVF4D_<NAME>` (e.g. `GVF4D_MAX_FRAMES`) and a flag of
`gvf4d serve` (`--max-frames`); the defaults admit a 300-frame 4K shot.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Optional


@dataclass(frozen=True)
class Limits:
    max_frame_pixels: int = field(default=40_000_000, metadata={"help": "pixels of one frame (8K UHD passes)"})
    max_shot_pixels: int = field(default=4_000_000_000, metadata={
        "help": "pixels summed over a shot's selected frames (300 frames of 4K DCI are 2.7 G)"})
    max_frames: int = field(default=3000, metadata={"help": "frames per shot"})
    max_upload_bytes: int = field(default=8 * 2**30, metadata={"help": "bytes of one uploaded file"})
    max_gaussians: int = field(default=2_000_000, metadata={
        "help": "Gaussians of the canonical (a splat file's, or those sampled on a mesh)"})
    max_mesh_faces: int = field(default=20_000_000, metadata={
        "help": "faces of a canonical mesh file (read from its header: PLY, binary STL, GLB)"})

    @classmethod
    def from_env(cls, environ=None) -> "Limits":
        """The defaults, each replaced by its `GVF4D_<NAME>` variable when set (a positive integer)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = f"GVF4D_{f.name.upper()}"
            if environ.get(var, "").strip():
                try:
                    values[f.name] = int(environ[var])
                except ValueError:
                    raise ValueError(f"{var}={environ[var]!r} is not a whole number") from None
                if values[f.name] < 1:
                    raise ValueError(f"{var}={environ[var]!r} must be at least 1")
        return replace(cls(), **values)

    def exceeded(self, name: str, value: int) -> Optional[str]:
        """None when value is within the budget `name` (a field, e.g. "max_frame_pixels"), else the end of a
        one-line refusal naming the limit and how to change it."""
        limit = getattr(self, name)
        if value <= limit:
            return None
        f = next(f for f in fields(self) if f.name == name)
        return (f"over the limit of {limit:,} {f.metadata['help'].split(' (')[0]} "
                f"(GVF4D_{name.upper()}, gvf4d serve --{name.replace('_', '-')})")
