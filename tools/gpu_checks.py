"""GPU-side checks with figures for docs/benchmarks.md: gsplat vs the PyTorch reference rasterizer, and the
batched many-view render the alignment search uses. Run on the GPU machine:
    PYTHONPATH=backend python3 tools/gpu_checks.py
"""
from __future__ import annotations

import json
import sys

import torch

from gvf4d.rendering import orbit_cameras, rasterize


def scene(n: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.2
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.rand(n, 3, generator=g) * 0.03 + 0.003
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    col = torch.rand(n, 3, generator=g)
    return [x.to(device) for x in (means, quats, scales, opac, col)]


def main():
    out = {"device": torch.cuda.get_device_name()}
    for n, size in ((500, 64), (5000, 128), (20000, 128)):
        g = scene(n, n, "cpu")
        cams = orbit_cameras([0, 90, 180, 270], 15, width=size, height=size)
        ref, ref_a = rasterize(*g, cams.viewmats, cams.Ks, size, size, backend="reference")
        gs, gs_a = rasterize(*[x.cuda() for x in g], cams.viewmats.cuda(), cams.Ks.cuda(), size, size, backend="gsplat")
        d = (gs.cpu() - ref).abs()
        da = (gs_a.cpu() - ref_a).abs()
        out[f"gsplat_vs_reference_n{n}_{size}px"] = {"rgb_max": d.max().item(), "rgb_mean": d.mean().item(),
                                                    "alpha_max": da.max().item(), "alpha_mean": da.mean().item()}
    # the alignment search's render: 360 azimuths of a 200k-Gaussian splat in one call
    g = scene(200_000, 7, "cuda")
    cams = orbit_cameras(list(range(-180, 180)), 0.0, width=256, height=256).to("cuda")
    for _ in range(2):
        rasterize(*g, cams.viewmats, cams.Ks, 256, 256, backend="gsplat")
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(5):
        rasterize(*g, cams.viewmats, cams.Ks, 256, 256, backend="gsplat")
    b.record()
    torch.cuda.synchronize()
    out["gsplat_360_views_200k_256px_ms"] = a.elapsed_time(b) / 5
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
