"""Seconds per frame of the exact render path, `gvf4d render RESULT --frames A:B --size WxH --out DIR`
(docs/render.md), on a synthetic result of about 200k Gaussians (every track animated) from its footage camera.

For each size the command runs twice through the real CLI in this process: one frame first (imports, gsplat's
build on CUDA, caches), then `--frames 0:F`, whose wall time over F is the figure (reading the frame from the
file, the rasterizer, the EXR written). On the CPU the rasterizer is the PyTorch reference; with `--device cuda`
it is gsplat. Prints a table and the machine's load. Run from the repository root:
    .venv/bin/python tools/bench_render.py [--device cpu|cuda] [--sizes 512 1024] [--frames 3]
    PYTHONPATH=backend python3 tools/bench_render.py --device cuda --frames 20        (GPU machine)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from gvf4d.cli import main as gvf4d
from gvf4d.result import write_result
from gvf4d.synthetic import make_synthetic_shot


def timed_render(result: Path, frames: str, size: int, out: Path, device: str) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):       # the files it lists
        code = gvf4d(["render", str(result), "--frames", frames, "--size", f"{size}x{size}", "--out", str(out),
                      "--device", device])
    if code != 0:
        raise SystemExit(f"gvf4d render exited {code}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square frame sizes in pixels")
    ap.add_argument("--frames", type=int, default=3, help="frames timed per size")
    ap.add_argument("--gaussians-per-part", type=int, default=33_334, help="6 parts' worth: 200k Gaussians")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        root = Path(tmp)
        shot = make_synthetic_shot(num_frames=args.frames, gaussians_per_part=args.gaussians_per_part)
        result = write_result(root / "result.gvf4d", shot.animated, {"fps": 24.0})
        rows = []
        for size in args.sizes:
            first = timed_render(result, "0:1", size, root / f"warm_{size}", args.device)
            wall = timed_render(result, f"0:{args.frames}", size, root / f"frames_{size}", args.device)
            rows.append({"size_px": size, "first_call_s": first, "frames": args.frames,
                         "per_frame_s": wall / args.frames})
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gvf4d render, {len(shot.animated.canonical):,} Gaussians, {machine}, "
          f"load average before/after {load_before[0]:.2f}/{os.getloadavg()[0]:.2f}")
    print("| size | first call (1 frame) | per frame |\n| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['size_px']} px | {r['first_call_s']:.2f} s | {r['per_frame_s']:.3f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": machine, "gaussians": len(shot.animated.canonical),
                                               "load_average": [load_before[0], os.getloadavg()[0]],
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
