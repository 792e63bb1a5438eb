"""Writes a .gvf4d with the backend's writer (and the expected arrays) for the add-on's Blender tests.

    .venv/bin/python tools/make_blender_fixture.py OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import torch

from gvf4d.result import write_result
from gvf4d.synthetic import make_synthetic_shot


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shot = make_synthetic_shot(num_frames=6, gaussians_per_part=50, seed=9)
    a = shot.animated
    # a small mesh riding along: the first 40 Gaussians' centres as vertices of a triangle fan
    v = a.canonical.means[:40]
    faces = torch.tensor([[0, i, i + 1] for i in range(1, 39)], dtype=torch.int32)
    mesh = {"vertices": v, "faces": faces, "colors": a.canonical.rgb[:40].clamp(0, 1), "frames": a.positions[:, :40]}
    write_result(out / "shot.gvf4d", a, {"fps": 24.0, "engine": {"name": "synthetic-ground-truth"}}, mesh=mesh)
    # a shot for the backend: its footage and the artist's canonical splat
    from gvf4d.pipelines.demo import write_shot_files
    write_shot_files(make_synthetic_shot(num_frames=4, gaussians_per_part=40, seed=2), out, 64)
    np.savez(out / "expected.npz", positions=a.positions.numpy(), rgb=a.canonical.rgb.clamp(0, 1).numpy(),
             opacity=a.canonical.opacities.numpy(), scales=a.scales.numpy(), quats=a.quats.numpy(),
             mesh_frames=a.positions[:, :40].numpy(), faces=faces.numpy())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
