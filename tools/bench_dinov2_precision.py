"""DINOv2-L/14-reg frame features for 32 frames on the GPU (random weights): float32 (as the published script
computes them), TF32, and float16 (what `gvf4d generate` uses on CUDA), with each one's relative error against
float32, next to the error of storing float32 features in fp16 as the published script does. Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_dinov2_precision.py
"""
from __future__ import annotations

import time

import numpy as np
import torch
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from gvf4d.models.dinov2_features import DinoV2Features


def timed(fn):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def main():
    torch.manual_seed(0)
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=518,
        patch_size=14, num_register_tokens=4)).cuda().eval()
    frames = np.random.default_rng(0).integers(0, 255, (32, 512, 512, 3), dtype=np.uint8)
    features = DinoV2Features(model, 4)
    ref, t32 = timed(lambda: features(frames))
    torch.backends.cuda.matmul.allow_tf32 = True
    tf, ttf = timed(lambda: features(frames))
    torch.backends.cuda.matmul.allow_tf32 = False
    half = DinoV2Features(model.half(), 4)
    h, t16 = timed(lambda: half(frames))
    print("| precision | 32 frames (s) | rel. error vs fp32 |\n| --- | ---: | ---: |")
    print(f"| fp32 (published) | {t32:.3f} | 0 |\n| tf32 | {ttf:.3f} | {rel(tf, ref):.2e} |")
    print(f"| fp16 (gvf4d on CUDA) | {t16:.3f} | {rel(h, ref):.2e} |")
    print(f"| fp32 stored as fp16 (published storage) | | {rel(ref.half().float(), ref):.2e} |")


if __name__ == "__main__":
    main()
