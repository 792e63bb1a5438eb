"""GPU benchmark of the GVF engine at full size with random weights: the DiT, the sampler and the motion-VAE decode.

Prints a table next to the published code's figures, with each row's peak GPU memory above the model weights and
the inputs (conditioning, activations and, on the engine path, the CUDA graph's buffers: the first call of a
shape, capture included), and writes JSON (--json PATH). Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_gpu.py --json bench.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

import torch

from gvf4d.kernels.fps import farthest_point_sampling
from gvf4d.kernels.shared_row_attention import shared_row_attention
from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
from gvf4d.samplers import DiscreteVPSchedule, DPMSolverPP, ThreeWayGuidance

PUBLISHED = {"dit_b1": 44.5, "dit_b3": 119.7, "dpm_32": 1730.0, "vae_decode": 285.0}
TARGET = {"dit_b1": 12.0, "dit_b3": 30.0, "dpm_32": 350.0, "vae_decode": 30.0}
# --without NAME: (module, its usability check), patched to refuse so that the fallback runs
ABLATIONS = {"shared-row-attention": ("gvf4d.kernels.shared_row_attention", "shared_row_attention_usable"),
             "linear-geglu": ("gvf4d.kernels.geglu", "linear_geglu_usable")}


def cuda_time(fn, warmup=3, iters=10) -> float:
    """Median milliseconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def peak_gib(fn) -> float:
    """Peak GPU memory (GiB) allocated while fn() runs, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def random_model(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights (the published initialisation zeroes the output layers): norm gains near 1."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = name.endswith("gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight"))
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if gain else
                    torch.randn(p.shape, generator=g) * (0.02 if p.ndim > 1 else 0.1))
    return model


def dit_inputs(batch: int, frames: int = 32, device="cuda", guided: bool = False):
    """Random DiT inputs; guided (batch 3): the three-way guidance's branches, as ThreeWayGuidance passes them
    (no frame features and no canonical Gaussians / no frame features / both; one latent, time and set of token
    positions for all three)."""
    g = torch.Generator(device=device).manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, device=device)
    one = 1 if guided else batch
    cond = {"cond_images": r(batch, frames, 1370, 1024), "static_latent": r(batch, 4096, 14),
            "deformation_position_xyz": r(one, 512, 3) * 0.3}
    if guided:
        cond["cond_images"][:2] = 0
        cond["static_latent"][:1] = 0
    return r(one, frames, 512, 16), torch.rand(one, generator=g, device=device) * 999, cond


def published_forward(dit, x, t, cond):
    """The DiT forward with the canonical attention computed as published (the plain path)."""
    condition = dit.condition(cond["cond_images"], cond["static_latent"], fast=False)
    return dit.denoise(x, t, condition, cond["deformation_position_xyz"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--only-vae", action="store_true", help="measure the motion-VAE decode only")
    ap.add_argument("--only-engine", action="store_true", help="measure the engine's DiT path only")
    ap.add_argument("--only-kernels", action="store_true", help="measure the DiT's attention kernels only")
    ap.add_argument("--without", choices=sorted(ABLATIONS), action="append", default=[],
                    help="leave out a fused kernel, for an A/B on the same machine (its fallback path runs)")
    args = ap.parse_args()
    for name in args.without:
        module, usable = ABLATIONS[name]
        setattr(importlib.import_module(module), usable, lambda *_: False)
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    rows, results = [], {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    if args.only_kernels:
        rows += bench_kernels(args, results)
    elif args.only_engine:
        rows += bench_engine_path(args, results, random_model(GVFDiT(GVFDiTConfig())).to(dev).eval())
    elif not args.only_vae:
        rows += bench_dit(args, results)
    if not (args.only_engine or args.only_kernels):
        rows += bench_vae(args, results)
    pts = torch.randn(1, 200_000, 3, device=dev)
    ms = cuda_time(lambda: farthest_point_sampling(pts, 4096), warmup=1, iters=3)
    results["fps_4096_of_200k_ms"] = ms
    rows.append(("farthest point sampling 4096 of 200k", float("nan"), float("nan"), ms,
                 peak_gib(lambda: farthest_point_sampling(pts, 4096))))

    print(f"{results['device']}, torch {results['torch']}")
    print("| step | published code (ms) | target (ms) | GVF4D (ms) | peak memory (GiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, pub, tgt, ours, peak in rows:
        print(f"| {name} | {pub:.1f} | {tgt:.1f} | {ours:.{3 if ours < 1 else 1}f} | {peak:.2f} |")
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def bench_kernels(args, results) -> list:
    """The DiT's folded canonical-Gaussian attention of one block (B=1: 32 frames x 512 tokens x 16 heads against
    4,096 rows) on each of its kernels."""
    g = torch.Generator(device="cuda").manual_seed(2)
    q = torch.randn(1, 32 * 512 * 16, 16, generator=g, device="cuda").half()
    rows = torch.randn(1, 4096, 16, generator=g, device="cuda").half()
    q[..., 14:], rows[..., 14:] = 0, 0
    out = []
    for name, fused in (("CUDA shared-row kernel", True), ("Triton head-summed kernel", False)):
        fn = lambda: shared_row_attention(q, rows, 14, 0.125, fused=fused)   # noqa: E731
        ms = cuda_time(lambda: [fn() for _ in range(20)], iters=args.iters) / 20     # launches hidden behind the GPU
        results[f"folded_attention_{'cuda' if fused else 'triton'}_ms"] = ms
        out.append((f"folded canonical attention 262,144 x 4,096 ({name})", float("nan"), float("nan"), ms, peak_gib(fn)))
    return out


def bench_dit(args, results) -> list:
    dev, rows = "cuda", []
    dit = random_model(GVFDiT(GVFDiTConfig())).to(dev).eval()
    for dtype_name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        for b in (1, 3):
            x, t, cond = dit_inputs(b)
            def fwd():
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
                    return published_forward(dit, x, t, cond)
            ms, peak = cuda_time(fwd, iters=args.iters), peak_gib(fwd)
            key = f"dit_b{b}"
            results[f"{key}_{dtype_name}_autocast_ms"] = ms
            results[f"{key}_{dtype_name}_autocast_peak_gib"] = peak
            rows.append((f"DiT forward B={b}, T=32 ({dtype_name} autocast)", PUBLISHED[key], TARGET[key], ms, peak))
    # agreement of half precision with fp32 on the same input
    x, t, cond = dit_inputs(1)
    with torch.no_grad():
        ref = dit(x, t, **cond)
        for dtype_name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            with torch.autocast("cuda", dtype=dtype):
                out = published_forward(dit, x, t, cond).float()
            results[f"dit_{dtype_name}_vs_fp32_rel_err"] = ((out - ref).norm() / ref.norm()).item()

    # the sampler: 32 network evaluations, multistep, B=1, no guidance
    schedule = DiscreteVPSchedule.cosine()
    x, _, cond = dit_inputs(1)
    def net(xx, tt, **c):
        with torch.autocast("cuda", dtype=torch.float16):
            return published_forward(dit, xx, tt, c).float()
    def solve():
        return DPMSolverPP(schedule).sample(ThreeWayGuidance(net, schedule, cond).noise, x, steps=32, method="multistep")
    ms, peak = cuda_time(solve, warmup=1, iters=3), peak_gib(solve)
    results["dpm_multistep_32nfe_ms"] = ms
    results["dpm_multistep_32nfe_peak_gib"] = peak
    rows.append(("DPM-Solver++ multistep, 32 NFE, B=1 (fp16 autocast)", PUBLISHED["dpm_32"], TARGET["dpm_32"], ms,
                 peak))
    return rows + bench_engine_path(args, results, dit)


def bench_engine_path(args, results, dit) -> list:
    """The engine's fast path (fp16 weights, fused kernels, the folded canonical attention on the CUDA kernel,
    the call replayed from a CUDA graph) against the plain fp16-autocast path with the published attention: time,
    and relative error of each against fp32 on the same input. The engine computes the DiT's conditioning once per
    sampling run ("condition") and runs the denoising call per step ("step"); "forward" is both."""
    from gvf4d.pipelines.gvf import GVFEngine, identity_stats
    rows = []
    x, t, cond = dit_inputs(1)
    with torch.no_grad():
        ref = dit(x, t, **cond)
        with torch.autocast("cuda", dtype=torch.float16):
            plain = published_forward(dit, x, t, cond).float()
    engine = GVFEngine(dit, random_model(MotionVAE(MotionVAEConfig(depth=1))), identity_stats()).to("cuda")
    for graphs in (False, True):
        net = engine._network("fp16", cuda_graphs=graphs)
        prepare = engine._conditioner("fp16")
        label = "fp16 weights + CUDA graph" if graphs else "fp16 weights, eager"
        name = "graph" if graphs else "eager"
        x1, t1, c1 = dit_inputs(1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            net(x1, t1, **prepare(c1))        # the first call: graph capture
        torch.cuda.synchronize()
        results[f"dit_engine_{name}_first_call_s"] = time.perf_counter() - start
        print(f"{label}: first call (B=1) {results[f'dit_engine_{name}_first_call_s']:.2f} s", flush=True)
        for b, guided in ((1, False), (3, False), (3, True)):
            xb, tb, cb = dit_inputs(b, guided=guided)
            if graphs:
                net.clear()                   # the peak includes this shape's capture and graph buffers
            with torch.no_grad():
                peak = peak_gib(lambda: net(xb, tb, **prepare(cb)))
                kw = prepare(cb)
                step = cuda_time(lambda: net(xb, tb, **kw), iters=args.iters)
                condition = cuda_time(lambda: prepare(cb), iters=args.iters)
                forward = cuda_time(lambda: net(xb, tb, **prepare(cb)), iters=args.iters)
            case = f"b{b}{'_guidance_branches' if guided else ''}"
            for part, ms in (("step", step), ("condition", condition), ("forward", forward)):
                results[f"dit_{case}_engine_{name}_{part}_ms"] = ms
            results[f"dit_{case}_engine_{name}_peak_gib"] = peak
            rows.append((f"DiT forward B={b}{' (guidance branches)' if guided else ''}, T=32 ({label}): condition "
                         f"{condition:.1f} + step {step:.1f}", PUBLISHED[f"dit_b{b}"], TARGET[f"dit_b{b}"], forward,
                         peak))
        with torch.no_grad():
            fast = net(x, t, **prepare(cond))
        results[f"dit_engine_{name}_vs_fp32_rel_err"] = ((fast - ref).norm() / ref.norm()).item()
        results[f"dit_engine_{name}_vs_plain_rel_err"] = ((fast - plain).norm() / plain.norm()).item()
    schedule = DiscreteVPSchedule.cosine()
    net = engine._network("fp16", cuda_graphs=True)
    def solve():
        with torch.no_grad():
            guidance = ThreeWayGuidance(net, schedule, cond, prepare=engine._conditioner("fp16"))
            return DPMSolverPP(schedule).sample(guidance.noise, x, steps=32, method="multistep")
    net.clear()
    peak = peak_gib(solve)
    ms = cuda_time(solve, warmup=1, iters=3)
    results["dpm_multistep_32nfe_engine_ms"] = ms
    results["dpm_multistep_32nfe_engine_peak_gib"] = peak
    rows.append(("DPM-Solver++ multistep, 32 NFE, B=1 (engine path)",
                 PUBLISHED["dpm_32"], TARGET["dpm_32"], ms, peak))
    results["dit_fp16_autocast_vs_fp32_rel_err"] = ((plain - ref).norm() / ref.norm()).item()
    return rows


def bench_vae(args, results) -> list:
    dev, rows = "cuda", []
    vae = random_model(MotionVAE(MotionVAEConfig())).to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(2)
    latents = torch.randn(32, 512, 16, generator=g, device=dev)
    gaussians = torch.randn(1, 196_608, 14, generator=g, device=dev) * 0.3
    with torch.no_grad():
        ref = vae.decode(latents, gaussians[:, :8192], folded=False)   # fp32 reference on a chunk
    outs = {}
    # the published computation and the folded one under fp16 autocast, then the engine's: folded, fp16 weights
    for name, folded, half in (("plain", False, False), ("folded", True, False), ("folded_fp16_weights", True, True)):
        if half:
            vae.cast_decoder(torch.float16)
        def decode():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=not half):
                return vae.decode(latents, gaussians, folded=folded)
        outs[name] = decode().float()
        ms, peak = cuda_time(decode, warmup=1, iters=max(3, args.iters // 2)), peak_gib(decode)
        results[f"vae_decode_196608x32_{name}_ms"] = ms
        results[f"vae_decode_{name}_peak_gib"] = peak
        label = "folded, fp16 weights (the engine)" if half else f"{name}, fp16 autocast"
        rows.append((f"motion-VAE decode 196,608 x 32, {label}", PUBLISHED["vae_decode"], TARGET["vae_decode"],
                     ms, peak))
    # the engine's decode: as the last, its context stack replayed from a CUDA graph, the deltas returned in float32
    from gvf4d.pipelines.gvf import GVFEngine, GVFSettings, identity_stats
    engine = GVFEngine(random_model(GVFDiT(GVFDiTConfig(num_blocks=1))), vae, identity_stats()).to(dev)
    def engine_decode():
        return engine.decode_rows(latents, gaussians[0], GVFSettings())
    before = torch.cuda.memory_allocated()
    outs["engine"] = engine_decode()[None]          # captures the graph, which keeps its activations' memory
    del outs["engine"]
    results["vae_decode_engine_graph_memory_gib"] = (torch.cuda.memory_allocated() - before) / 2**30
    outs["engine"] = engine_decode()[None]
    ms, peak = cuda_time(engine_decode, warmup=1, iters=max(3, args.iters // 2)), peak_gib(engine_decode)
    results["vae_decode_196608x32_engine_ms"], results["vae_decode_engine_peak_gib"] = ms, peak
    rows.append(("motion-VAE decode 196,608 x 32, the engine (the last, its context stack from a CUDA graph)",
                 PUBLISHED["vae_decode"], TARGET["vae_decode"], ms, peak))
    for name in outs:
        results[f"vae_decode_{name}_vs_fp32_rel_err"] = ((outs[name][:, :, :8192] - ref).norm() / ref.norm()).item()
    return rows


if __name__ == "__main__":
    main()
