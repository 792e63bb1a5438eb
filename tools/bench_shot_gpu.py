"""A whole shot through the GVF engine on the GPU with random full-size weights: footage (synthetic frames as
PNGs, 32 by default) -> ingestion -> the canonical stage -> DINOv2-L features -> conditions -> DPM-Solver++ ->
motion-VAE decode -> .gvf4d written. The canonical stage (--canonical trellis, the default) runs
TRELLIS-image-large + GVF's Gaussian decoder on the first frame and the facing search; random weights decode a
random occupancy, so its latent stages run on a synthetic object's 20k voxels (as tools/bench_canonical_gpu.py).
`--canonical splat` uses the synthetic 198k-Gaussian splat instead (no canonical stage). `--frames 32 300 32`
runs each length in turn (a shot longer than 32 frames is sampled in windows, docs/long_shots.md), each twice (the
first warms kernels and graphs up), and prints each one's stage times, peak GPU memory, and the memory the warm
engine keeps after it (allocated and reserved once the caches are emptied, as the service's worker does after a
job; the DiT's CUDA graphs among it). Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_shot_gpu.py [--canonical trellis|splat] [--method adaptive|multistep]
        [--frames 32 300 32]
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
from bench_canonical_gpu import random_dinov2, random_trellis, shell_voxels  # noqa: E402
from bench_gpu import random_model  # noqa: E402

from gvf4d.canonical.azimuth import rotate_about_z, search_azimuth  # noqa: E402
from gvf4d.pipelines.trellis import trellis_input_image  # noqa: E402

from gvf4d.footage import prepare_footage  # noqa: E402
from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig  # noqa: E402
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig  # noqa: E402
from gvf4d.pipelines.gvf import GVFEngine, GVFSettings, identity_stats  # noqa: E402
from gvf4d.pipelines.model_registry import release_gpu_memory  # noqa: E402
from gvf4d.progress import StageClock  # noqa: E402
from gvf4d.representations.gvf_gaussians import GVFGaussians  # noqa: E402
from gvf4d.result import write_result  # noqa: E402
from gvf4d.synthetic import make_synthetic_shot, render_footage  # noqa: E402


def write_footage(frames: int, folder: Path) -> Path:
    """`frames` frames of a synthetic shot's footage at 512 px as RGBA PNGs (rendered from a small splat of the
    same motion: with random weights the content does not change the work)."""
    from PIL import Image
    folder.mkdir(parents=True)
    rgba = render_footage(make_synthetic_shot(num_frames=frames, gaussians_per_part=2000).animated.to("cuda"),
                          512, 512).numpy()
    for t, image in enumerate(rgba):
        Image.fromarray(image, "RGBA").save(folder / f"frame_{t:04d}.png", compress_level=1)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="multistep")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--canonical", default="trellis", choices=["trellis", "splat"])
    ap.add_argument("--frames", type=int, nargs="+", default=[32], help="shot lengths, each run in turn")
    args = ap.parse_args()
    dev = torch.device("cuda")
    root = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    dino = random_dinov2(dev)
    trellis = random_trellis(dev, dino) if args.canonical == "trellis" else None
    engine = GVFEngine(random_model(GVFDiT(GVFDiTConfig())), random_model(MotionVAE(MotionVAEConfig())),
                       identity_stats()).to(dev)
    torch.cuda.synchronize()
    load = time.perf_counter() - t0
    built_gib = torch.cuda.memory_allocated() / 2**30
    splat = make_synthetic_shot(num_frames=2, gaussians_per_part=33_000).animated.canonical     # 198k Gaussians
    voxels = shell_voxels(20_000).to(dev)
    settings = GVFSettings(method=args.method, steps=args.steps)
    shots = []
    for frames in args.frames:
        footage = root / f"footage_{frames}"
        if not footage.is_dir():
            write_footage(frames, footage)
        for run in range(2):   # the first run warms up kernels, graphs and caches; the second is the one reported
            clock = StageClock(dev)
            laps, lap = clock.timings, clock.lap
            torch.cuda.reset_peak_memory_stats()
            prepared = prepare_footage(footage)
            lap("ingest")
            if trellis is None:
                canonical = GVFGaussians.from_gaussians(splat)
            else:
                cond = trellis.condition(trellis_input_image(prepared.frames[0], prepared.alphas[0]))
                gen = torch.Generator().manual_seed(0)
                trellis.sample_structure(cond, gen)                 # timed; its random occupancy is not used
                made = trellis.decode(trellis.sample_latent(voxels, cond, gen)).to_gaussians()
                lap("canonical (TRELLIS)")
                frames_t, alphas = prepared.tensors(128)
                azimuth = search_azimuth(made, frames_t[0], alphas[0], range(-180, 180)).azimuth_deg
                canonical = GVFGaussians.from_gaussians(rotate_about_z(made, -azimuth))
                lap("facing search")
            feats = dino(prepared.frames)
            lap("features")
            before_engine = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            result = engine.run(canonical, feats, settings)
            engine_peak = torch.cuda.max_memory_allocated() - base
            laps.update(result.timings)
            clock.restart()
            write_result(root / "shot.gvf4d", result.animated, {"fps": 24.0})
            lap("write")
            if run == 0:
                first_run = dict(laps)
        total = sum(laps.values())
        shots.append({"frames": frames, "windows": result.windows, "network_evaluations": result.network_evaluations,
                      "stages_s": laps, "total_excluding_load_s": total,
                      "engine_peak_gib_above_inputs": engine_peak / 2**30,
                      "peak_gib_ingest_to_features": before_engine / 2**30,
                      "result_gib": (root / "shot.gvf4d").stat().st_size / 2**30, "first_run_stages_s": first_run})
        del result, feats, prepared
        release_gpu_memory()
        graphs = engine._fast.get(True)
        shots[-1].update(held_allocated_gib=torch.cuda.memory_allocated() / 2**30,
                         held_reserved_gib=torch.cuda.memory_reserved() / 2**30,
                         dit_graphs=len(graphs._graphs) if graphs is not None else 0)
    print(json.dumps({"device": torch.cuda.get_device_name(), "gaussians": len(canonical), "method": args.method,
                      "canonical": args.canonical, "model_build_s": load, "allocated_after_build_gib": built_gib,
                      "shots": shots}, indent=1))


if __name__ == "__main__":
    main()
