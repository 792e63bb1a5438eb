"""The canonical stage at full size on the GPU with random weights: TRELLIS-image-large's networks (configs as
published in its ckpts/*.json), GVF's Gaussian decoder, DINOv2-L, 12 + 12 flow-Euler steps with guidance, then
the facing search (360 azimuths) on the decoded splat. Prints a table of stage times (median of runs after one
warm-up) and peak memory.

Random weights decode a random occupancy, so the structured-latent stages run on a synthetic object's voxels
(a spherical shell in the 64^3 grid, --voxels of them, about what TRELLIS produces for one object) instead of
the decoder's output; the sparse-structure sampling and decoding are timed as they run.
    PYTHONPATH=backend python3 tools/bench_canonical_gpu.py [--voxels 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, "tools")
from bench_gpu import random_model  # noqa: E402

from gvf4d.canonical.azimuth import search_azimuth  # noqa: E402
from gvf4d.models.dinov2_features import DinoV2Features  # noqa: E402
from gvf4d.models.trellis import (GaussianDecoder, SLatFlowModel, SparseStructureDecoder,  # noqa: E402
                                  SparseStructureFlowModel)
from gvf4d.pipelines.trellis import GVF_SAMPLER_OVERRIDES, FlowSampling, TrellisImageTo3D  # noqa: E402
from gvf4d.progress import StageClock  # noqa: E402
from gvf4d.rendering import footage_camera, render_gaussians  # noqa: E402

# TRELLIS-image-large ckpts/*.json "args" (the pipeline reads these files; here they stand in for them)
SS_FLOW = dict(resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024, num_blocks=24,
               num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True, use_fp16=True)
SS_DEC = dict(out_channels=1, latent_channels=8, num_res_blocks=2, num_res_blocks_middle=2, channels=[512, 128, 32],
              use_fp16=True)
SLAT_FLOW = dict(resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024, num_blocks=24,
                 num_heads=16, mlp_ratio=4, patch_size=2, num_io_res_blocks=2, io_block_channels=[128], pe_mode="ape",
                 qk_rms_norm=True, use_fp16=True)
GS_DEC = dict(resolution=64, model_channels=768, latent_channels=8, num_blocks=12, num_heads=12, mlp_ratio=4,
              attn_mode="swin", window_size=8, pe_mode="ape", use_fp16=True, representation_config={
                  "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
                  "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 8, "2d_filter_kernel_size": 0.1,
                  "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus"})
SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
           "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}


def shell_voxels(count: int, resolution: int = 64) -> torch.Tensor:
    """(count', 4) int32 voxels of a 2-voxel-thick spherical shell whose size gives about `count` voxels."""
    r = np.sqrt(count / (4 * np.pi * 2))
    g = np.stack(np.meshgrid(*[np.arange(resolution)] * 3, indexing="ij"), -1) - (resolution - 1) / 2
    d = np.linalg.norm(g, axis=-1)
    xyz = np.argwhere((d > r - 1) & (d <= r + 1))
    return torch.from_numpy(np.concatenate([np.zeros((len(xyz), 1), int), xyz], 1)).int()


def profile_latent_flow(pipe: TrellisImageTo3D, coords: torch.Tensor, cond: torch.Tensor) -> None:
    from torch.profiler import ProfilerActivity, profile
    slat = pipe.sample_latent(coords, cond, torch.Generator().manual_seed(0))   # warm-up (kernels, caches)
    x = type(slat).from_coords(torch.cat([slat.feats, slat.feats]),
                               torch.cat([coords, coords + torch.tensor([1, 0, 0, 0], device=coords.device).int()]), 2)
    t = torch.full((2,), 500.0, device=coords.device)
    c = torch.cat([cond, torch.zeros_like(cond)])
    with torch.no_grad(), torch.autocast("cuda", torch.float16):
        pipe.slat_flow(x, t, c)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            pipe.slat_flow(x, t, c)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))


def random_trellis(dev, encoder: DinoV2Features) -> TrellisImageTo3D:
    """TRELLIS-image-large's networks and GVF's Gaussian decoder with random weights, on dev."""
    nets = {"sparse_structure_flow_model": random_model(SparseStructureFlowModel(SS_FLOW)).to(dev),
            "sparse_structure_decoder": random_model(SparseStructureDecoder(SS_DEC)).to(dev),
            "slat_flow_model": random_model(SLatFlowModel(SLAT_FLOW)).to(dev)}
    decoder = random_model(GaussianDecoder(GS_DEC)).to(dev)
    samplers = {k: FlowSampling.from_pipeline(SAMPLER, o, k) for k, o in GVF_SAMPLER_OVERRIDES.items()}
    return TrellisImageTo3D(nets, decoder, encoder, samplers, torch.zeros(8), torch.ones(8))


def random_dinov2(dev) -> DinoV2Features:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    return DinoV2Features(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=518,
        patch_size=14, num_register_tokens=4)).to(dev, torch.float16), 4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA ops of one guided latent-flow call")
    args = ap.parse_args()
    dev = torch.device("cuda")
    pipe = random_trellis(dev, random_dinov2(dev))
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in {
        "sparse_structure_flow_model": pipe.ss_flow, "sparse_structure_decoder": pipe.ss_decoder,
        "slat_flow_model": pipe.slat_flow, "gaussian_decoder": pipe.decoder}.items()}
    coords = shell_voxels(args.voxels).to(dev)
    image = np.random.default_rng(0).integers(0, 255, (518, 518, 3), dtype=np.uint8)
    cam = footage_camera(512, 512).to(dev)
    if args.profile:
        profile_latent_flow(pipe, coords, pipe.condition(image))
        return
    runs = []
    for run in range(args.runs + 1):
        torch.cuda.reset_peak_memory_stats()
        clock = StageClock(dev)
        gen = torch.Generator().manual_seed(run)
        cond = pipe.condition(image)
        clock.lap("condition (DINOv2-L)")
        structure = pipe.sample_structure(cond, gen)
        clock.lap("structure: 12 steps + decoder")
        slat = pipe.sample_latent(coords, cond, gen)
        clock.lap("latent: 12 steps")
        gaussians = pipe.decode(slat).to_gaussians()
        clock.lap("Gaussian decoder")
        seen = render_gaussians(gaussians, cam)
        torch.cuda.synchronize()
        clock.restart()
        search_azimuth(gaussians, seen.rgb[0], seen.alpha[0, ..., 0], range(-180, 180))
        clock.lap("facing search (360)")
        if run:
            runs.append({**clock.timings, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30})
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = sum(v for k, v in med.items() if k != "peak_gib")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("parameters (M): " + ", ".join(f"{k} {v:.1f}" for k, v in params.items()))
    print(f"voxels {len(coords)} -> Gaussians {8 * len(coords)}; sampled structure had {len(structure)} voxels")
    print("| stage | median (s) |\n| --- | --- |")
    for k, v in med.items():
        if k != "peak_gib":
            print(f"| {k} | {v:.3f} |")
    print(f"| canonical stage total | {total:.3f} |\npeak memory {med['peak_gib']:.2f} GiB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"median": med, "runs": runs, "voxels": len(coords), "params_m": params}, f, indent=1)


if __name__ == "__main__":
    main()
