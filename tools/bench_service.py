"""Service overhead per job: (submit -> done, seen by a client) minus the engine's own stage times.

    .venv/bin/python tools/bench_service.py [--jobs 5]

Starts `gvf4d serve` on a loopback port with a fresh data folder, runs small fit jobs on a synthetic shot.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gvf4d.pipelines.demo import write_shot_files
from gvf4d.service.client import BackendClient, BackendError
from gvf4d.synthetic import make_synthetic_shot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gvf4d-bench-"))
    write_shot_files(make_synthetic_shot(num_frames=4, gaussians_per_part=40), root, 64)
    proc = subprocess.Popen([sys.executable, "-m", "gvf4d.cli", "serve", "--data", str(root / "data")],
                            stderr=subprocess.DEVNULL)
    try:
        lock = root / "data" / "backend.lock.json"
        while True:
            if lock.is_file():
                info = json.loads(lock.read_text())
                client = BackendClient(info["url"], info["token"])
                try:
                    client.health()
                    break
                except BackendError:
                    pass
            time.sleep(0.1)
        rows = []
        for i in range(args.jobs):
            body = {"footage": str(root / "footage"), "canonical_path": str(root / "canonical.ply"), "frames": 4,
                    "fit_size": 32, "fit_iterations": 2 + i}
            t0 = time.perf_counter()
            job = client.submit(body)
            while job["state"] not in ("done", "failed", "cancelled"):
                time.sleep(0.01)
                job = client.job(job["id"])
            wall = time.perf_counter() - t0
            engine = sum(job["timings"].values())
            rows.append((wall, engine, wall - engine, ",".join(job["reused_stages"]) or "-"))
        print("| job | submit->done (s) | stages (s) | overhead (ms) | reused |\n| --- | ---: | ---: | ---: | --- |")
        for i, (w, e, o, r) in enumerate(rows):
            print(f"| {i} | {w:.3f} | {e:.3f} | {1000 * o:.0f} | {r} |")
        print(f"median overhead: {1000 * statistics.median(r[2] for r in rows):.0f} ms")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
