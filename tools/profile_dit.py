"""Where the DiT's time goes on the GPU, and what torch.compile buys. Run on the GPU machine:
    PYTHONPATH=backend python3 tools/profile_dit.py
"""
from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "tools")
from bench_gpu import cuda_time, dit_inputs, random_model  # noqa: E402

from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig  # noqa: E402


def main():
    dit = random_model(GVFDiT(GVFDiTConfig())).cuda().eval()
    x, t, cond = dit_inputs(1)

    def fwd(model):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            return model(x, t, **cond)

    fwd(dit)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fwd(dit)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    ref = fwd(dit).float()
    for mode in ("default", "max-autotune-no-cudagraphs"):
        t0 = time.perf_counter()
        compiled = torch.compile(dit, mode=mode, dynamic=False)
        out = fwd(compiled).float()
        torch.cuda.synchronize()
        print(f"compile[{mode}]: first call {time.perf_counter() - t0:.1f} s, "
              f"{cuda_time(lambda: fwd(compiled)):.2f} ms, rel err vs eager {((out - ref).norm() / ref.norm()).item():.2e}")
        torch._dynamo.reset()
    print(f"eager: {cuda_time(lambda: fwd(dit)):.2f} ms")


if __name__ == "__main__":
    main()
