"""Time to import a large result into Blender (bpy) as keyframed splats.

    .venv-blender/bin/python tools/bench_blender_import.py [--gaussians 200000] [--frames 32]

The .gvf4d is written with the backend's writer (in .venv), then imported here.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WRITE = """
import sys, torch
from gvf4d.representations import AnimatedGaussians, Gaussians
from gvf4d.result import write_result
n, t, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
g = torch.Generator().manual_seed(0)
c = Gaussians(means=torch.rand(n, 3, generator=g) - 0.5, scales=torch.rand(n, 3, generator=g) * 0.01 + 0.001,
              quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
              opacities=torch.rand(n, generator=g), sh_dc=torch.randn(n, 3, generator=g))
pos = c.means[None] + 0.01 * torch.randn(t, n, 3, generator=g)
write_result(path, AnimatedGaussians(c, pos, quats=c.quats[None].expand(t, -1, -1).contiguous()), {"fps": 24.0})
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=200_000)
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    import bpy
    from gvf_blender import importer
    path = Path(tempfile.mkdtemp()) / "big.gvf4d"
    subprocess.run([str(ROOT / ".venv/bin/python"), "-c", WRITE, str(args.gaussians), str(args.frames), str(path)], check=True)
    print(f"{path.stat().st_size / 2**20:.0f} MiB, {args.gaussians} Gaussians x {args.frames} frames")
    for display in ("points", "splat"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t0 = time.perf_counter()
        importer.import_splats(path, display=display)
        t1 = time.perf_counter()
        bpy.context.scene.frame_set(5)
        bpy.context.evaluated_depsgraph_get()
        t2 = time.perf_counter()
        print(f"| import as {display} | {t1 - t0:.2f} s | first frame evaluated +{t2 - t1:.2f} s |")


if __name__ == "__main__":
    main()
