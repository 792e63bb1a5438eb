"""DiT forward variants on the GPU: the published-style fp16 autocast (plain path) against half-precision
weights, torch.compile and CUDA graphs; agreement with fp32 for each. Run on the GPU machine:
    PYTHONPATH=backend python3 tools/bench_dit_variants.py
"""
from __future__ import annotations

import sys
import time

import torch

sys.path.insert(0, "tools")
from bench_gpu import cuda_time, dit_inputs, random_model  # noqa: E402

from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig  # noqa: E402


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    base = random_model(GVFDiT(GVFDiTConfig())).cuda().eval()
    x, t, cond = dit_inputs(1)
    with torch.no_grad():
        ref = base(x, t, **cond)

    def autocast_fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            return base(x, t, **cond)
    out = autocast_fwd()
    print(f"| fp16 autocast (plain) | {cuda_time(autocast_fwd):.2f} ms | rel err {rel(out, ref):.2e} |", flush=True)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        half = random_model(GVFDiT(GVFDiTConfig())).cuda().eval().to(dtype)
        fwd = lambda m=half: m(x, t, **cond)
        with torch.no_grad():
            out = fwd()
            print(f"| {name} weights, eager | {cuda_time(fwd):.2f} ms | rel err {rel(out, ref):.2e} |", flush=True)
            for mode in ("default", "reduce-overhead"):
                t0 = time.perf_counter()
                comp = torch.compile(half, mode=mode, dynamic=False)
                out = comp(x, t, **cond)
                out = comp(x, t, **cond)
                torch.cuda.synchronize()
                ct = time.perf_counter() - t0
                print(f"| {name} weights, compile {mode} | {cuda_time(lambda: comp(x, t, **cond)):.2f} ms | "
                      f"rel err {rel(out, ref):.2e} | compile {ct:.0f} s |", flush=True)
                torch._dynamo.reset()
        del half
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
