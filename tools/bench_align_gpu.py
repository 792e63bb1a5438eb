"""The azimuth search on the GPU: 360 views of a ~200k-Gaussian splat, silhouette and CLIP scorers (CLIP
ViT-B/32 with random weights: timing only). Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_align_gpu.py
"""
from __future__ import annotations

import json
import time

import torch

from gvf4d.canonical.azimuth import ClipScorer, rotate_about_z, search_azimuth
from gvf4d.rendering import footage_camera, render_gaussians
from gvf4d.synthetic import make_synthetic_shot


def main():
    g = make_synthetic_shot(num_frames=1, gaussians_per_part=33_000).animated.canonical.to("cuda")
    from transformers import CLIPConfig, CLIPModel
    clip = ClipScorer(CLIPModel(CLIPConfig()).to("cuda").half())      # ViT-B/32 shapes, random weights
    out = {"device": torch.cuda.get_device_name(), "gaussians": len(g)}
    for size in (256, 512):
        seen = render_gaussians(rotate_about_z(g, 37.0), footage_camera(size, size))
        for name, scorer in (("silhouette", None), ("clip", clip)):
            for _ in range(2):   # warm-up, then timed
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                found = search_azimuth(g, seen.rgb[0], seen.alpha[0, ..., 0], clip=scorer, batch=90)
                torch.cuda.synchronize()
            out[f"{size}px_{name}"] = {"seconds": time.perf_counter() - t0, "found_deg": found.azimuth_deg}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
