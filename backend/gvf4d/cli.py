"""The gvf4d command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_demo(args) -> int:
    from .pipelines.demo import run_demo
    outs = run_demo(Path(args.out), num_frames=args.frames, gaussians_per_part=args.gaussians_per_part,
                    footage_size=args.footage_size, preview_size=args.preview_size, seed=args.seed)
    print(f"result:  {outs.result}\nply:     {outs.ply_dir}/\nglb:     {outs.glb}\npreview: {outs.preview}")
    return 0


def _cmd_info(args) -> int:
    from .result import ResultFile
    f = ResultFile(args.file)
    if args.json:
        print(json.dumps({"gaussians": f.num_gaussians, "frames": f.num_frames, "tensors": sorted(f.names),
                          "metadata": f.metadata}, indent=2))
        return 0
    m = f.metadata
    print(f"{f.path}")
    print(f"  schema version {m['schema_version']}, {f.num_gaussians} Gaussians x {f.num_frames} frames at {m['fps']} fps")
    print(f"  tracks: {', '.join(sorted(n for n in f.names if n.startswith('frames.')))}")
    eng = m.get("engine") or {}
    print(f"  engine: {eng.get('name', '?')}  seed: {m.get('seed')}")
    foot = m.get("footage")
    if foot:
        print(f"  footage: {foot.get('path')} frames {foot.get('frame_start')}..{foot.get('frame_end')} stride {foot.get('stride')}")
    if f.mesh() is not None:
        print(f"  mesh: {f.dims['V']} vertices, {f.dims['F']} faces")
    for k, v in (m.get("timings") or {}).items():
        print(f"  time {k}: {v:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gvf4d", description="Video-to-4D Gaussian splats (GVF).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="synthetic shot -> footage -> .gvf4d result + PLY/GLB/preview (no GPU, no weights)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--frames", type=int, default=32)
    d.add_argument("--gaussians-per-part", type=int, default=800)
    d.add_argument("--footage-size", type=int, default=128)
    d.add_argument("--preview-size", type=int, default=192)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    i = sub.add_parser("info", help="describe a .gvf4d result")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_info)
    return p


def main(argv=None) -> int:
    from .footage import FootageError
    from .result import ResultFileError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FootageError, ResultFileError) as e:
        print(f"gvf4d: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
