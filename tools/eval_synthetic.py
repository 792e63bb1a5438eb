"""Scores an engine on a fixed set of synthetic shots with exact ground truth.

    .venv/bin/python tools/eval_synthetic.py [--frames 32] [--size 128] [--out outputs/eval]

For each shot: PSNR / SSIM of renders of the result against renders of the true animation (carried into the
result's space by the canonical splat's normalisation and alignment), from the input view and held-out views
(side, back, top), over all frames, and the mean error of the Gaussians' tracks (object size 1); and the same
for the static baseline (the aligned canonical splat, unmoved). LPIPS is not reported: its network weights are
not available offline here.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gvf4d.engines.fit import FitSettings
from gvf4d.evaluation import VIEWS, score
from gvf4d.pipelines.demo import reconstruct_shot
from gvf4d.synthetic import make_synthetic_shot

SHOTS = {"shot0": dict(seed=0), "shot1": dict(seed=1), "shot2_gentle": dict(seed=2, motion_scale=0.5),
         "shot3_strong": dict(seed=3, motion_scale=1.5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--gaussians-per-part", type=int, default=400)
    ap.add_argument("--size", type=int, default=128, help="fit resolution")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--out", default="outputs/eval")
    ap.add_argument("--shots", nargs="*", default=list(SHOTS))
    args = ap.parse_args()
    rows = {}
    for name in args.shots:
        t0 = time.perf_counter()
        shot = make_synthetic_shot(num_frames=args.frames, gaussians_per_part=args.gaussians_per_part, **SHOTS[name])
        rec = reconstruct_shot(shot, Path(args.out) / name, fit_size=args.size,
                               fit=FitSettings(iterations_first=2 * args.iterations, iterations=args.iterations))
        rows[name] = {**score(rec.animated, rec.truth), "seconds": time.perf_counter() - t0}
        # the baseline an engine has to beat: the canonical splat left where it is
        rows[f"{name} (static baseline)"] = {**score(rec.static_baseline, rec.truth), "seconds": 0.0}
        print(name, json.dumps(rows[name]), flush=True)
    cols = [(v, m) for v in VIEWS for m in ("psnr", "ssim")]
    print("\n| shot | " + " | ".join(f"{v} {m.upper()}" for v, m in cols) + " | track error | seconds |")
    print("| --- |" + " ---: |" * (len(cols) + 2))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[v][m]:.2f}" if m == "psnr" else f"{r[v][m]:.3f}" for v, m in cols)
              + f" | {r['position_error']:.4f} | {r['seconds']:.0f} |")
    fitted = [r for n, r in rows.items() if "baseline" not in n]
    mean = lambda f: sum(f(r) for r in fitted) / len(fitted)
    print("| mean (fitted) | " + " | ".join((f"{mean(lambda r: r[v][m]):.2f}" if m == "psnr" else f"{mean(lambda r: r[v][m]):.3f}")
                                   for v, m in cols) + f" | {mean(lambda r: r['position_error']):.4f} | |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "eval.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
