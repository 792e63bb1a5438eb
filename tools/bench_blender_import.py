"""Import time, frame-change time and memory of a large result in Blender (bpy), splat and points display.

    .venv-blender/bin/python tools/bench_blender_import.py [--gaussians 200000] [--frames 32] [--sh]
        [--frame-data AUTO EMBEDDED REFERENCED]

The .gvf4d (every track moving; --sh adds degree-3 SH bands) is written with the backend's writer (in .venv),
then imported here, once per display and way of holding the frames (embedded in the .blend or referenced in a
frame folder). A frame change is scene.frame_set (which evaluates the depsgraph: the animation and display
modifiers) to the next frame between two result frames, so every track is blended and, with referenced frames,
one new frame file is read. Playback then sets every result frame once, in order. On a shared machine the CPU time (summed over Blender's threads) is
steadier than the wall time. The .blend is then saved to measure its size.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gvf_blender import frame_cache  # noqa: E402

WRITE = """
import sys, torch
from gvf4d.representations import AnimatedGaussians, Gaussians
from gvf4d.result import write_result
n, t, sh, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
g = torch.Generator().manual_seed(0)
c = Gaussians(means=torch.rand(n, 3, generator=g) - 0.5, scales=torch.rand(n, 3, generator=g) * 0.01 + 0.001,
              quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
              opacities=torch.rand(n, generator=g), sh_dc=torch.randn(n, 3, generator=g),
              sh_rest=0.1 * torch.randn(n, 15, 3, generator=g) if sh else None)
pos = c.means[None] + 0.01 * torch.randn(t, n, 3, generator=g)
quats = torch.nn.functional.normalize(c.quats[None] + 0.1 * torch.randn(t, n, 4, generator=g), dim=-1)
grow = torch.linspace(1.0, 1.5, t)[:, None, None]
a = AnimatedGaussians(c, pos, scales=c.scales[None] * grow, quats=quats,
                      opacities=c.opacities[None] * torch.linspace(1.0, 0.5, t)[:, None],
                      sh_dc=c.sh_dc[None] + 0.1 * torch.randn(t, n, 3, generator=g))
write_result(path, a, {"fps": 24.0})
"""


def rss_mib() -> float:
    """The process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, display: str, frame_data: str, changes: int, frames: int) -> str:
    """One display in this (fresh) process: a table row."""
    import bpy
    from gvf_blender import importer
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (0.0, -2.0, 0.0)
    camera.rotation_euler = (1.5708, 0.0, 0.0)
    before = rss_mib()
    t0 = time.perf_counter()
    obj = importer.import_splats(path, display=display, frame_data=frame_data)
    t1 = time.perf_counter()
    imported = rss_mib() - before
    scene.frame_set(2)
    t2 = time.perf_counter()
    times, cpu = [], []
    for k in range(changes):
        start, start_cpu = time.perf_counter(), time.process_time()
        scene.frame_set(3 + k % (frames - 4), subframe=0.5)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    times.sort()
    cpu.sort()
    after = rss_mib() - before
    start = time.perf_counter()
    for frame in range(1, frames + 1):             # playback: every result frame once, in order
        scene.frame_set(frame)
    playback = (time.perf_counter() - start) / frames
    blend = path.with_name(f"bench_{display}.blend")
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    size = blend.stat().st_size / 2**20
    blend.unlink()
    return (f"| {obj['gvf4d_frame_data'].lower()} | {display} | {t1 - t0:.2f} s | {1000 * (t2 - t1):.0f} ms "
            f"| {1000 * times[len(times) // 2]:.0f} ms, {1000 * times[0]:.0f}-{1000 * times[-1]:.0f} ms "
            f"| {1000 * cpu[len(cpu) // 2]:.0f} ms | {1000 * playback:.0f} ms | +{imported:.0f} MiB | +{after:.0f} MiB "
            f"| +{rss_mib() - before:.0f} MiB | {size:.1f} MiB |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=200_000)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--sh", action="store_true", help="degree-3 SH bands (view-dependent colour)")
    ap.add_argument("--changes", type=int, default=12, help="frame changes timed per display")
    ap.add_argument("--frame-data", nargs="+", default=["AUTO"], choices=["AUTO", "EMBEDDED", "REFERENCED"],
                    help="how the import holds the frames (importer.references_frames); each is measured")
    ap.add_argument("--measure", nargs=3, metavar=("FILE", "DISPLAY", "FRAME_DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(measure(Path(args.measure[0]), args.measure[1], args.measure[2], args.changes, args.frames))
        return
    path = Path(tempfile.mkdtemp()) / "big.gvf4d"
    subprocess.run([str(ROOT / ".venv/bin/python"), "-c", WRITE, str(args.gaussians), str(args.frames),
                    "1" if args.sh else "0", str(path)], check=True)
    print(f"{path.stat().st_size / 2**20:.0f} MiB file, {args.gaussians} Gaussians x {args.frames} frames, "
          f"all tracks{', SH degree 3' if args.sh else ''}")
    print("| frames | display | import | first frame | frame change (median, range) | its CPU time (all threads) "
          "| playback, per frame | memory after import | after frame changes | after playback | .blend |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for frame_data in args.frame_data:
        for display in ("points", "splat"):
            # each in a fresh process, so that memory figures do not mix; the frame folder is written by the
            # first referenced import and reused by the second (its time is the import of the first row)
            row = subprocess.run([sys.executable, __file__, "--measure", str(path), display, frame_data,
                                  "--changes", str(args.changes), "--frames", str(args.frames)],
                                 check=True, capture_output=True, text=True).stdout
            print(row.strip().splitlines()[-1])
    folder = frame_cache.folder_for(path)
    if folder.is_dir():
        print(f"frame folder: {sum(p.stat().st_size for p in folder.iterdir()) / 2**20:.0f} MiB")
        shutil.rmtree(folder)
    path.unlink()


if __name__ == "__main__":
    main()
