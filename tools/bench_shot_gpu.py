"""A whole shot through the GVF engine on the GPU with random full-size weights: footage (32 synthetic frames)
-> ingestion -> DINOv2-L features -> conditions -> DPM-Solver++ -> motion-VAE decode of 200k Gaussians ->
.gvf4d written. The canonical stage (TRELLIS) is not part of it (not implemented yet): the canonical splat is
a synthetic one. Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_shot_gpu.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, "tools")
from bench_gpu import random_model  # noqa: E402

from gvf4d.footage import prepare_footage  # noqa: E402
from gvf4d.models.dinov2_features import DinoV2Features  # noqa: E402
from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig  # noqa: E402
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig  # noqa: E402
from gvf4d.pipelines.demo import write_shot_files  # noqa: E402
from gvf4d.pipelines.gvf import GVFEngine, GVFSettings  # noqa: E402
from gvf4d.progress import StageClock  # noqa: E402
from gvf4d.representations.gvf_gaussians import GVFGaussians  # noqa: E402
from gvf4d.result import write_result  # noqa: E402
from gvf4d.synthetic import make_synthetic_shot  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="multistep")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    dev = torch.device("cuda")
    root = Path(tempfile.mkdtemp())
    shot = make_synthetic_shot(num_frames=32, gaussians_per_part=33_000)   # 198k Gaussians
    footage, _ = write_shot_files(shot, root, 512, device="cuda")
    t0 = time.perf_counter()
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    dino = DinoV2Features(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=518,
        patch_size=14, num_register_tokens=4)).to(dev, torch.float16), 4)
    stats = {"static_mean": torch.zeros(14), "static_std": torch.ones(14), "deformation_mean": torch.zeros(16),
             "deformation_std": torch.ones(16)}
    engine = GVFEngine(random_model(GVFDiT(GVFDiTConfig())), random_model(MotionVAE(MotionVAEConfig())), stats).to(dev)
    torch.cuda.synchronize()
    load = time.perf_counter() - t0
    canonical = GVFGaussians.from_gaussians(shot.animated.canonical).to(dev)
    settings = GVFSettings(method=args.method, steps=args.steps)
    for run in range(2):   # the first run warms up kernels and caches; the second is the one reported
        clock = StageClock(dev)
        laps, lap = clock.timings, clock.lap
        prepared = prepare_footage(footage, count=32)
        lap("ingest")
        feats = dino(prepared.frames)
        lap("features")
        result = engine.run(canonical, feats, settings)
        laps.update(result.timings)
        clock.restart()
        write_result(root / "shot.gvf4d", result.animated, {"fps": 24.0})
        lap("write")
    total = sum(laps.values())
    print(json.dumps({"device": torch.cuda.get_device_name(), "gaussians": len(canonical), "method": args.method,
                      "network_evaluations": result.network_evaluations, "model_build_s": load, "stages_s": laps,
                      "total_excluding_load_s": total, "total_including_load_s": total + load}, indent=1))


if __name__ == "__main__":
    main()
