"""The gvf4d command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_demo(args) -> int:
    from .pipelines.demo import run_demo
    from .engines.fit import FitSettings
    fit = FitSettings(iterations_first=args.fit_iterations * 2, iterations=args.fit_iterations)
    outs = run_demo(Path(args.out), num_frames=args.frames, gaussians_per_part=args.gaussians_per_part,
                    footage_size=args.footage_size, fit_size=args.fit_size, preview_size=args.preview_size,
                    seed=args.seed, fit=fit)
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


def _generate_request(args):
    """A GenerateRequest from the generate/submit arguments."""
    from .engines.fit import FitSettings
    from .pipelines.generate import GenerateRequest
    from .pipelines.gvf import GVFSettings
    kind = args.canonical[0]
    path = Path(args.canonical[1]).resolve() if len(args.canonical) > 1 else None
    return GenerateRequest(
        footage=Path(args.footage).resolve(), out=Path(args.out).resolve() if args.out else Path("result.gvf4d"),
        canonical=(kind, path), engine=args.engine,
        weights=Path(args.weights).resolve() if args.weights else None, frames=args.frames, start=args.start,
        end=args.end, stride=args.stride, matte=args.matte, fps=args.fps, device=args.device, fit_size=args.fit_size,
        fit=FitSettings(iterations_first=2 * args.fit_iterations, iterations=args.fit_iterations),
        gvf=GVFSettings(seed=args.seed, method=args.method, steps=args.steps, guidance_scale=args.guidance[0],
                        guidance_scale2=args.guidance[1], precision=args.precision),
        exports=tuple(args.export), refine=args.refine, azimuth_step=args.azimuth_step, mesh=args.mesh,
        mesh_faces=args.mesh_faces, mesh_samples=args.mesh_samples)


def _cmd_generate(args) -> int:
    from .pipelines.generate import generate
    from .pipelines.stage_cache import StageCache
    from .progress import printed_progress
    outcome = generate(_generate_request(args), printed_progress(),
                       cache=StageCache(Path(args.cache)) if args.cache else None)
    if outcome.reused:
        print(f"reused stages: {', '.join(outcome.reused)}", file=sys.stderr)
    for f in outcome.files:
        print(f)
    return 0


def _cmd_weights(args) -> int:
    from . import weights_folder as wf
    folder = Path(args.weights)
    if args.download:
        wf.download(folder)
    if args.convert:
        for p in wf.convert(folder):
            print(f"converted -> {p}")
    rows = wf.report(folder, with_hashes=args.verify)
    print(f"{folder}")
    for r in rows:
        size = f"{r.size / 2**20:9.1f} MiB" if r.path else " " * 13
        print(f"  {r.name:17s} {r.status:17s} {size}  {r.path or ''}")
    bad = [r for r in rows if r.status in ("missing", "HASH MISMATCH")]
    return 1 if bad else 0


def _client(args):
    from .service.client import BackendClient
    from .service.server import default_data_dir
    if args.url:
        if not args.token:
            raise ValueError("--url needs --token")
        return BackendClient(args.url, args.token)
    return BackendClient.from_lock(Path(args.data) if args.data else default_data_dir())


def _cmd_serve(args) -> int:
    from .service.server import serve
    serve(args.host, args.port, Path(args.data) if args.data else None, args.allow_remote,
          Path(args.weights) if args.weights else None)
    return 0


def _cmd_submit(args) -> int:
    kind = args.canonical[0]
    body = {"footage": str(Path(args.footage).resolve()), "canonical": kind,
            "canonical_path": str(Path(args.canonical[1]).resolve()) if len(args.canonical) > 1 else None,
            "engine": args.engine, "mesh": args.mesh, "mesh_faces": args.mesh_faces,
            "mesh_samples": args.mesh_samples,
            "weights": str(Path(args.weights).resolve()) if args.weights else None, "frames": args.frames,
            "start": args.start, "end": args.end, "stride": args.stride, "matte": args.matte, "fps": args.fps,
            "seed": args.seed, "method": args.method, "steps": args.steps, "guidance": list(args.guidance),
            "fit_size": args.fit_size, "fit_iterations": args.fit_iterations, "exports": args.export,
            "refine": args.refine, "azimuth_step": args.azimuth_step}
    client = _client(args)
    job = client.submit(body)
    print(job["id"])
    if args.wait:
        for j in client.follow(job["id"]):
            print(f"  {j['state']:10s} {j['stage']:10s} {100 * j['progress']:5.1f}%", file=sys.stderr)
        if j["state"] != "done":
            print(f"gvf4d: job {j['id']} {j['state']}: {j.get('error') or ''}", file=sys.stderr)
            return 1
        if args.out:
            client.download(j["id"], j["result"], Path(args.out))
            print(args.out)
    return 0


def _cmd_status(args) -> int:
    client = _client(args)
    jobs = [client.job(args.job)] if args.job else client.jobs()
    for j in jobs:
        extra = j.get("error") or j.get("result") or ""
        print(f"{j['id']}  {j['state']:11s} {j['stage']:10s} {100 * j['progress']:5.1f}%  {extra}")
    return 0


def _cmd_cancel(args) -> int:
    j = _client(args).cancel(args.job)
    print(f"{j['id']}  {j['state']}")
    return 0


def _add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="the backend's data folder holding its lock file (default: $GVF4D_HOME or "
                                  "~/.local/share/gvf4d)")
    p.add_argument("--url", help="a backend's address instead of the lock file (needs --token)")
    p.add_argument("--token")


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """The settings of one generation job (shared by generate and submit)."""
    p.add_argument("footage", help="a video file, a folder of images, or one image of a numbered sequence")
    p.add_argument("--out", help="the .gvf4d file to write (submit: the service picks one in the job's folder)")
    p.add_argument("--engine", default="fit", choices=["fit", "gvf"],
                   help="fit: weights-free, fitted to the footage; gvf: the published diffusion model (needs --weights)")
    p.add_argument("--canonical", nargs="+", required=True, metavar=("KIND", "PATH"),
                   help="trellis (generated from the first frame, as published; needs --weights) | "
                        "mesh PATH (.glb/.obj/.ply/...: Gaussians sampled on its surface) | splat PATH.ply (a 3DGS splat)")
    p.add_argument("--weights", help="folder with gvf/ (published checkpoints), dinov2/ and, for --canonical trellis, "
                                     "trellis/ (TRELLIS-image-large)")
    p.add_argument("--frames", type=int, default=32, help="frames to use (the published model uses 32)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=float, default=None, help="override the footage's frame rate")
    p.add_argument("--matte", default="auto", help="auto | alpha | model | chroma[:#rrggbb[:tol]] | masks:DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="adaptive", choices=["adaptive", "multistep"])
    p.add_argument("--steps", type=int, default=100, help="multistep steps")
    p.add_argument("--guidance", type=float, nargs=2, default=[1.0, 1.0], metavar=("G1", "G2"),
                   help="three-way guidance scales (canonical, frames); 1 1 = no guidance")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--fit-size", type=int, default=128, help="fit engine: working resolution (px)")
    p.add_argument("--fit-iterations", type=int, default=20, help="fit engine: optimisation steps per frame")
    p.add_argument("--azimuth-step", type=float, default=None, metavar="DEG",
                   help="find which side of the canonical faces the camera, trying every DEG degrees (default: 1 for "
                        "trellis as published; 0 = trust the asset's orientation, the default for mesh and splat)")
    p.add_argument("--mesh", action="store_true",
                   help="also extract a mesh from the canonical splat and store its per-frame deformation")
    p.add_argument("--mesh-faces", type=int, default=20_000, help="face budget of the extracted mesh")
    p.add_argument("--mesh-samples", type=int, default=100_000,
                   help="--canonical mesh: Gaussians sampled on the mesh's surface")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="gvf engine: refine its result against the footage with N fit steps per frame")
    p.add_argument("--export", action="append", default=[], choices=["ply", "glb", "preview"],
                   help="also write per-frame PLYs, a GLB or a preview video beside the result (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gvf4d", description="Video-to-4D Gaussian splats (GVF).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="synthetic shot -> footage -> fit engine -> .gvf4d + PLY/GLB/preview + scores (no GPU, no weights)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--frames", type=int, default=32)
    d.add_argument("--gaussians-per-part", type=int, default=400)
    d.add_argument("--footage-size", type=int, default=256)
    d.add_argument("--fit-size", type=int, default=128, help="resolution the fit engine works at")
    d.add_argument("--fit-iterations", type=int, default=20, help="optimisation steps per frame")
    d.add_argument("--preview-size", type=int, default=192)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    i = sub.add_parser("info", help="describe a .gvf4d result")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_info)

    g = sub.add_parser("generate", help="footage -> .gvf4d with an engine")
    add_job_arguments(g)
    g.add_argument("--cache", help="a folder for the per-shot stage cache (reruns reuse ingestion, canonical, ...)")
    g.set_defaults(func=_cmd_generate)

    sv = sub.add_parser("serve", help="run the local backend service (HTTP API, job queue, GPU worker)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=0, help="0 picks a free port (written to the lock file)")
    sv.add_argument("--data", help="data folder: jobs, cache, lock file (default: $GVF4D_HOME or ~/.local/share/gvf4d)")
    sv.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    sv.add_argument("--weights", help="the weights folder this backend uses (its status shows in /v1/health)")
    sv.set_defaults(func=_cmd_serve)
    sb = sub.add_parser("submit", help="submit a job to a running backend")
    add_job_arguments(sb)
    _add_connection(sb)
    sb.add_argument("--wait", action="store_true", help="follow the job to its end (and download to --out)")
    sb.set_defaults(func=_cmd_submit)
    st = sub.add_parser("status", help="list a backend's jobs, or show one")
    st.add_argument("job", nargs="?")
    _add_connection(st)
    st.set_defaults(func=_cmd_status)
    cc = sub.add_parser("cancel", help="cancel a job")
    cc.add_argument("job")
    _add_connection(cc)
    cc.set_defaults(func=_cmd_cancel)

    w = sub.add_parser("weights", help="show, verify, convert or download the model weights")
    w.add_argument("--weights", required=True, help="the weights folder")
    w.add_argument("--verify", action="store_true", help="hash every file and compare with weights.lock.json")
    w.add_argument("--convert", action="store_true", help="write .safetensors beside each .pt (tensors only)")
    w.add_argument("--download", action="store_true", help="fetch from the model hub (needs a network)")
    w.set_defaults(func=_cmd_weights)
    return p


def main(argv=None) -> int:
    from .exporters.ply import SplatPlyError
    from .footage import FootageError
    from .models.weights import WeightsError
    from .result import ResultFileError
    from .service.client import BackendError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FootageError, ResultFileError, WeightsError, SplatPlyError, ValueError, BackendError,
            FileNotFoundError) as e:
        print(f"gvf4d: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
