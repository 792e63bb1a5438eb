"""The gvf4d command line."""
from __future__ import annotations

import argparse
import json
import os
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
    m = f.metadata   # the reader has checked the types of the keys used here
    rational = m.get("fps_rational")
    rate = f"{m['fps']:.6g} fps" + (f" ({rational[0]}/{rational[1]})" if rational else "")
    print(f"{f.path}")
    print(f"  schema version {m['schema_version']}, {f.num_gaussians} Gaussians x {f.num_frames} frames at {rate}")
    storage = "float16 deltas from the canonical" if "frames.position_delta" in f.names else "float32"
    print(f"  positions: {storage}")
    print(f"  tracks: {', '.join(sorted(n for n in f.names if n.startswith('frames.')))}")
    eng = m.get("engine") or {}
    print(f"  engine: {eng.get('name', '?')}  seed: {m.get('seed')}")
    foot = m.get("footage")
    if foot:
        print(f"  footage: {foot.get('path')} frames {foot.get('frame_start')}..{foot.get('frame_end')} stride {foot.get('stride')}")
    if f.has("mesh.vertices"):
        print(f"  mesh: {f.dims['V']} vertices, {f.dims['F']} faces")
    for k, v in (m.get("timings") or {}).items():
        print(f"  time {k}: {v:.2f} s")
    return 0


def _render_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r} is not WIDTHxHEIGHT in pixels (e.g. 1920x1080)") from None
    if w < 1 or h < 1:
        raise ValueError(f"--size {text!r} is not a positive width and height")
    return w, h


def _render_background(text: str) -> tuple[float, float, float] | None:
    if text == "transparent":
        return None
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3:
        raise ValueError(f"--background {text!r} is not r,g,b (display sRGB, 0-1) or 'transparent'")
    return rgb


def _cmd_render(args) -> int:
    from .pipelines.render import RenderRequest, render
    from .progress import printed_progress
    req = RenderRequest(result=Path(args.result), out=Path(args.out), camera=args.camera, frames=args.frames,
                        size=_render_size(args.size), blend=args.blend,
                        background=_render_background(args.background), png=args.png, device=args.device)
    for path in render(req, printed_progress()):
        print(path)
    return 0


def _generate_request(args, paths: bool = True):
    """A GenerateRequest from the generate/submit arguments, checked by `gvf4d.validation` as the API checks a
    job (with `paths`, the files it names too); RequestError names the input and the problem."""
    from .engines.fit import FitSettings
    from .pipelines.gvf import GVFSettings
    from .pipelines.request import GenerateRequest
    from .validation import RequestError, check_path_text, check_request

    def local(label: str, text: str | None) -> Path | None:
        return check_path_text(label, text).resolve() if text is not None else None

    kind = args.canonical[0]
    if args.canonical_exact is not None and kind != "splat":
        raise RequestError(f"--canonical-exact needs --canonical splat PATH (the edited canonical, a 3DGS .ply), "
                           f"not {kind}")
    req = GenerateRequest(
        footage=local("footage", args.footage), out=local("--out", args.out) if args.out else Path("result.gvf4d"),
        canonical=(kind, local(f"canonical {kind}", args.canonical[1]) if len(args.canonical) > 1 else None),
        engine=args.engine, weights=local("--weights", args.weights), frames=args.frames, start=args.start,
        end=args.end, stride=args.stride, matte=args.matte, fps=args.fps, device=args.device, fit_size=args.fit_size,
        fit=FitSettings(iterations_first=2 * args.fit_iterations, iterations=args.fit_iterations),
        gvf=GVFSettings(seed=args.seed, method=args.method, steps=args.steps, guidance_scale=args.guidance[0],
                        guidance_scale2=args.guidance[1], precision=args.precision),
        exports=tuple(args.export), refine=args.refine, azimuth_step=args.azimuth_step, mesh=args.mesh,
        mesh_faces=args.mesh_faces, mesh_samples=args.mesh_samples,
        exact=_exact_canonical(args.canonical_exact) if args.canonical_exact is not None else None)
    return check_request(req, paths=paths)


def _exact_canonical(text: str):
    """The space of the canonical of the result at `text`, read from its metadata as the add-on's rerun reads it
    (the API's canonical_exact fields): its facing, its alignment and whether its values include it, and its
    normalisation. ResultFileError names the file when these are unreadable or out of range."""
    from dataclasses import replace

    from .canonical.align import SilhouetteAlignment
    from .canonical.exact import ExactCanonical
    from .canonical.normalise import Normalisation
    from .result import ResultFile, ResultFileError
    from .validation import RequestError, check_exact_canonical, check_path_text, finite

    def vector(label: str, values) -> tuple[float, float, float]:
        if len(values) != 3:
            raise RequestError(f"{label} must have 3 numbers, got {len(values)}")
        return tuple(finite(label, v) for v in values)

    f = ResultFile(check_path_text("--canonical-exact", text))
    canonical = f.metadata.get("canonical") or {}
    try:
        facing = canonical.get("facing") or canonical.get("alignment") or {}   # the fit engine repeats it there
        exact = ExactCanonical(facing_deg=finite("facing", facing.get("azimuth_deg", 0.0)))
        alignment = canonical.get("alignment")
        if alignment:
            applied = alignment.get("applied", True)
            if not isinstance(applied, bool):
                raise RequestError(f"alignment applied must be true or false, got {applied!r}")
            exact = replace(exact, alignment_applied=applied, alignment=SilhouetteAlignment(
                finite("alignment scale", alignment["scale"]), vector("alignment offset", alignment["offset"])))
        normalisation = (f.metadata.get("coordinates") or {}).get("normalisation")
        if normalisation:
            exact = replace(exact, normalisation=Normalisation(vector("normalisation centre", normalisation["centre"]),
                                                               finite("normalisation scale", normalisation["scale"])))
        check_exact_canonical(exact)
    except (AttributeError, KeyError, TypeError, RequestError) as e:
        problem = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise ResultFileError(f.path, f"its canonical's facing, alignment or normalisation: {problem}") from None
    return exact


def _cmd_generate(args) -> int:
    from .pipelines.generate import generate
    from .pipelines.stage_cache import StageCache
    from .progress import printed_progress
    from .validation import RequestError, check_free_space, check_path_text, is_disk_full
    req = _generate_request(args)
    check_free_space(req.out.parent, label="the output folder's disk")
    try:
        outcome = generate(req, printed_progress(),
                           cache=StageCache(check_path_text("--cache", args.cache)) if args.cache else None)
    except OSError as e:
        if is_disk_full(e):
            raise RequestError(f"{e.filename or req.out.parent}: the disk is full ({e.strerror})", status=507) from None
        raise
    if outcome.reused:
        print(f"reused stages: {', '.join(outcome.reused)}", file=sys.stderr)
    for f in outcome.files:
        print(f)
    return 0


def _cmd_weights(args) -> int:
    """Lists the folder (exit 1 when a file the gvf engine needs is missing); --verify hashes every file and exits 1
    unless each present one matches a recorded hash (docs/weights.md)."""
    from . import weights_folder as wf
    folder = Path(args.weights)
    if not args.download and (args.setup or args.clip or args.matting):
        raise ValueError("--setup, --clip and --matting go with --download")
    if args.trust_pickle and not args.convert:
        raise ValueError("--trust-pickle goes with --convert")
    if args.download:
        from .weights_download import download
        download(folder, args.setup or "gvf", clip=args.clip, matting=args.matting)
    if args.convert:
        for p in wf.convert(folder, trust_pickle=args.trust_pickle):
            print(f"converted -> {p}")
    rows = wf.report(folder, with_hashes=args.verify)
    print(f"{folder}")
    for r in rows:
        size = f"{r.size / 2**20:9.1f} MiB" if r.path else " " * 13
        print(f"  {r.name:17s} {r.status:17s} {size}  {r.path or ''}")
        for check in (c for c in r.checks or () if c.status != "ok"):
            print(f"      {check.describe()}")
    bad = {"missing"} | ({"HASH MISMATCH", "unverified"} if args.verify else set())
    if args.verify and any(r.status == "unverified" for r in rows):
        print("unverified files have no recorded hash: `--download` fetches and checks them against the hub; "
              "`--convert` records the hashes of the files you have (docs/weights.md)")
    if args.download and not args.verify:
        return 0               # the download raised on any failure; the listing after it only informs
    return 1 if any(r.status in bad for r in rows) else 0


def _cmd_doctor(args) -> int:
    from .doctor import format_table, run_checks, to_json
    from .service.server import default_data_dir
    rows = run_checks(Path(args.weights) if args.weights else None,
                      Path(args.data) if args.data else default_data_dir(), warm=args.warm)
    report = to_json(rows)
    print(json.dumps(report, indent=2) if args.json else f"gvf4d doctor\n{format_table(rows)}")
    return 0 if report["ok"] else 1


def _client(args):
    from .service.client import BackendClient
    from .service.server import default_data_dir
    if args.url:
        if not args.token:
            raise ValueError("--url needs --token")
        return BackendClient(args.url, args.token)
    return BackendClient.from_lock(Path(args.data) if args.data else default_data_dir())


def _cmd_serve(args) -> int:
    """Runs the backend until SIGTERM or Ctrl-C; exit 1 when another backend serves the data folder. A --max-*
    flag sets its GVF4D_MAX_* variable, so every part of this process reads the same budgets."""
    from dataclasses import fields

    from .limits import Limits
    from .service.retention import RetentionPolicy
    from .service.server import DataFolderBusy, serve
    from .validation import finite
    for f in fields(Limits):
        value = getattr(args, f.name)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{f.name.replace('_', '-')} must be at least 1, got {value}")
            os.environ[f"GVF4D_{f.name.upper()}"] = str(value)
    ray = _ray_settings(args)
    uploads = RetentionPolicy.from_days_and_gib(finite("--uploads-max-age", args.uploads_max_age, 0.0, low_open=True),
                                                finite("--uploads-max-size", args.uploads_max_size, 0.0))
    cache = RetentionPolicy.from_days_and_gib(finite("--cache-max-age", args.cache_max_age, 0.0, low_open=True),
                                              finite("--cache-max-size", args.cache_max_size, 0.0))
    try:
        serve(args.host, args.port, Path(args.data) if args.data else None, args.allow_remote,
              Path(args.weights) if args.weights else None, Limits.from_env(), uploads, cache,
              finite("--upload-timeout", args.upload_timeout, 0.0, low_open=True), args.threads, ray)
    except (DataFolderBusy, ConnectionError) as e:       # ConnectionError: --ray ADDRESS where no head answers
        print(f"gvf4d: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _ray_settings(args):
    """serve's --ray options as RaySettings (None without --ray); --threads checked too."""
    from .service.ray_cluster import RaySettings
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.ray is None:
        if args.cpu_actors is not None or args.shared:
            raise ValueError("--cpu-actors and --shared go with --ray")
        return None
    if args.cpu_actors is not None and args.cpu_actors < 0:
        raise ValueError(f"--cpu-actors must be at least 0, got {args.cpu_actors}")
    return RaySettings(address=args.ray or None, cpu_actors=args.cpu_actors,
                       shared=Path(args.shared).resolve() if args.shared else None)


def _cmd_submit(args) -> int:
    req = _generate_request(args, paths=not args.url)   # a backend found through its lock file runs on this machine
    kind = args.canonical[0]
    body = {"footage": str(Path(args.footage).resolve()), "canonical": kind,
            "canonical_path": str(Path(args.canonical[1]).resolve()) if len(args.canonical) > 1 else None,
            "engine": args.engine, "mesh": args.mesh, "mesh_faces": args.mesh_faces,
            "mesh_samples": args.mesh_samples,
            "weights": str(Path(args.weights).resolve()) if args.weights else None, "frames": args.frames,
            "start": args.start, "end": args.end, "stride": args.stride, "matte": args.matte, "fps": args.fps,
            "seed": args.seed, "method": args.method, "steps": args.steps, "guidance": list(args.guidance),
            "fit_size": args.fit_size, "fit_iterations": args.fit_iterations, "exports": args.export,
            "refine": args.refine, "azimuth_step": args.azimuth_step, "precision": args.precision}
    if req.exact is not None:
        e = req.exact
        body.update(canonical_exact=True, facing_deg=e.facing_deg,
                    alignment={"scale": e.alignment.scale, "offset": list(e.alignment.offset),
                               "applied": e.alignment_applied},
                    normalisation={"centre": list(e.normalisation.centre), "scale": e.normalisation.scale})
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


def _cmd_batch(args) -> int:
    """Submits every shot of the list, waits for all, prints the table; exit 1 unless every shot is done."""
    from .batch import BatchRun, format_table, read_shots
    shots = read_shots(Path(args.shots), check_files=not args.url)   # a backend found by its lock file is local
    outcomes = BatchRun(lambda: _client(args)).run(shots, Path(args.out) if args.out else None)
    print(format_table(outcomes))
    return 0 if all(o.job["state"] == "done" for o in outcomes) else 1


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
    p.add_argument("--canonical-exact", metavar="RESULT",
                   help="with --canonical splat PATH: the splat is RESULT's canonical (a .gvf4d), edited, in RESULT's "
                        "space: used as it is, without normalisation, facing search or alignment, with RESULT's "
                        "facing, alignment and normalisation (the API's canonical_exact), so the new take sits "
                        "where RESULT did")
    p.add_argument("--weights", help="folder with gvf/ (published checkpoints), dinov2/ and, for --canonical trellis, "
                                     "trellis/ (TRELLIS-image-large)")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="use at most the first N frames of [start, end) with stride (default: all of them)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=float, default=None,
                   help="the result's frame rate (default: the footage's own, 24000/1001 kept as a ratio; 24 for images)")
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
    from dataclasses import fields

    from .limits import Limits
    from .service.retention import CACHE_RETENTION, UPLOADS_RETENTION
    from .service.server import UPLOAD_STALL_S
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
    r = sub.add_parser("render", help="render a .gvf4d result from a camera: multilayer EXR per frame (docs/render.md)")
    r.add_argument("result", help="the .gvf4d file")
    r.add_argument("--camera", default="footage",
                   help="footage (the camera recorded in the result) or a JSON file of Blender camera parameters")
    r.add_argument("--frames", help="A:B renders the result's frames A..B-1 (0-based; default: all)")
    r.add_argument("--size", help="WIDTHxHEIGHT in pixels (default: the camera's)")
    r.add_argument("--blend", default="display", choices=["display", "linear"],
                   help="display: blend display colours as 3DGS does; linear: blend in linear light as Blender does")
    r.add_argument("--background", default="transparent",
                   help="r,g,b display colour under the splat, or transparent (premultiplied RGBA)")
    r.add_argument("--png", action="store_true", help="also write an sRGB PNG preview per frame")
    r.add_argument("--device", default="auto", help="auto (CUDA with gsplat when present), cpu, cuda")
    r.add_argument("--out", required=True, help="folder for frame_NNNN.exr (and .png)")
    r.set_defaults(func=_cmd_render)

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
    for f in fields(Limits):
        sv.add_argument(f"--{f.name.replace('_', '-')}", type=int, metavar="N",
                        help=f"budget: {f.metadata['help']} (default {f.default:_}, or $GVF4D_{f.name.upper()})")
    for folder, policy in (("uploads", UPLOADS_RETENTION), ("cache", CACHE_RETENTION)):
        sv.add_argument(f"--{folder}-max-age", type=float, default=policy.max_age_s / 86400, metavar="DAYS",
                        help=f"{folder}/: remove entries older than this (default %(default)g days)")
        sv.add_argument(f"--{folder}-max-size", type=float, default=policy.max_bytes / 2**30, metavar="GIB",
                        help=f"{folder}/: then remove the oldest entries until the rest fit (default %(default)g GiB)")
    sv.add_argument("--upload-timeout", type=float, default=UPLOAD_STALL_S, metavar="S",
                    help="refuse an upload that sends nothing for this long (default %(default)g s)")
    sv.add_argument("--threads", type=int, metavar="N",
                    help="torch threads of every job, each Ray actor's too (default: torch's count on this machine)")
    sv.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                    help="run the jobs on Ray actors, several at once: ADDRESS (HOST:PORT) joins the cluster whose "
                         "head runs on this machine (docs/cluster.md); none starts one here on 127.0.0.1. Ray's token "
                         "authentication is always on")
    sv.add_argument("--cpu-actors", type=int, metavar="N",
                    help="--ray: actors without a GPU, for fit jobs (default: as many as the CPUs hold when the "
                         "cluster has no GPU, else none)")
    sv.add_argument("--shared", metavar="DIR",
                    help="--ray: a folder mounted at the same path on every node: inputs in it are read in place, "
                         "DIR/cache is the stage cache, a data folder in it receives results in place")
    sv.set_defaults(func=_cmd_serve)
    sb = sub.add_parser("submit", help="submit a job to a running backend")
    add_job_arguments(sb)
    _add_connection(sb)
    sb.add_argument("--wait", action="store_true", help="follow the job to its end (and download to --out)")
    sb.set_defaults(func=_cmd_submit)
    ba = sub.add_parser("batch", help="submit a sequence of shots (a CSV or TOML list, one shot per row) to a "
                                      "running backend, wait for them and print a table of results and failures")
    ba.add_argument("shots", help="CSV (header: footage, canonical, canonical_path, engine, any submit option) or "
                                  "TOML ([[shot]] tables with the same keys); paths relative to the list's folder")
    ba.add_argument("--out", help="a folder to download each result into, as <shot name>.gvf4d")
    _add_connection(ba)
    ba.set_defaults(func=_cmd_batch)
    st = sub.add_parser("status", help="list a backend's jobs, or show one")
    st.add_argument("job", nargs="?")
    _add_connection(st)
    st.set_defaults(func=_cmd_status)
    cc = sub.add_parser("cancel", help="cancel a job")
    cc.add_argument("job")
    _add_connection(cc)
    cc.set_defaults(func=_cmd_cancel)

    w = sub.add_parser("weights", help="show, verify, convert or download the model weights (docs/weights.md)")
    w.add_argument("--weights", required=True, help="the weights folder")
    w.add_argument("--verify", action="store_true",
                   help="hash every file and check it against a recorded hash; exit 1 for a mismatch or an "
                        "unverified file (no recorded hash)")
    w.add_argument("--convert", action="store_true", help="write .safetensors beside each .pt (tensors only)")
    w.add_argument("--trust-pickle", action="store_true",
                   help="with --convert: also read .pt files that hold more than tensors (their code runs: only for "
                        "files from a source you trust)")
    w.add_argument("--download", action="store_true",
                   help="fetch from the model hub (HF_ENDPOINT), resuming, checking free space and sha256")
    w.add_argument("--setup", choices=["gvf", "trellis", "all"],
                   help="with --download: gvf (the GVF engine; default), trellis (the TRELLIS canonical) or all")
    w.add_argument("--clip", action="store_true", help="with --download: also CLIP ViT-B/32 (the facing search)")
    w.add_argument("--matting", action="store_true",
                   help="with --download: also the matting model (BiRefNet lite) for footage without alpha")
    w.set_defaults(func=_cmd_weights)
    dr = sub.add_parser("doctor", help="check this machine: GPU, driver, CUDA, torch, optional kernels, weights, disk")
    dr.add_argument("--weights", help="the weights folder to check")
    dr.add_argument("--data", help="the data folder (default: $GVF4D_HOME or ~/.local/share/gvf4d)")
    dr.add_argument("--warm", action="store_true",
                    help="on CUDA, run each fused kernel and gsplat once to fill their compile caches")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=_cmd_doctor)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is _cmd_doctor:       # before the backend's imports: when they fail, doctor says why
        return _cmd_doctor(args)
    from .exporters.ply import SplatPlyError
    from .footage import FootageError
    from .models.weights import WeightsError
    from .result import ResultFileError
    from .service.client import BackendError
    try:
        return args.func(args)
    except (FootageError, ResultFileError, WeightsError, SplatPlyError, ValueError, BackendError,
            FileNotFoundError) as e:
        print(f"gvf4d: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
