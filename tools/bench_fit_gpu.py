"""The fit engine on the GPU (gsplat) at larger sizes: time and scores against the synthetic ground truth.

    PYTHONPATH=backend python3 tools/bench_fit_gpu.py --gaussians-per-part 3000 --size 256
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from gvf4d.engines.fit import FitSettings
from gvf4d.evaluation import score
from gvf4d.pipelines.demo import reconstruct_shot
from gvf4d.progress import StageClock
from gvf4d.synthetic import make_synthetic_shot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians-per-part", type=int, nargs="+", default=[3000])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    for gpp in args.gaussians_per_part:
        shot = make_synthetic_shot(num_frames=args.frames, gaussians_per_part=gpp)
        clock = StageClock()
        laps = clock.timings
        rec = reconstruct_shot(shot, Path(tempfile.mkdtemp()), footage_size=512, fit_size=args.size,
                               fit=FitSettings(iterations_first=2 * args.iterations, iterations=args.iterations),
                               lap=clock.lap, device="cuda")
        s = score(rec.animated.to("cuda"), rec.truth.to("cuda"), size=256)
        st = score(rec.static_baseline.to("cuda"), rec.truth.to("cuda"), size=256)
        print(json.dumps({"gaussians": len(shot.animated.canonical), "fit_size": args.size, "laps_s": laps,
                          "fit": s, "static": st}), flush=True)


if __name__ == "__main__":
    main()
