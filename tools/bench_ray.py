"""Throughput of a sequence of shots (shots per hour): the single local worker vs `gvf4d serve --ray` with 1 and 2
actors, each using every core of this machine (the single worker and the one actor with all of them as torch
threads, two actors with half each).

    .venv/bin/python tools/bench_ray.py [--shots 6] [--frames 6] [--fit-iterations 6]

Each configuration is a fresh `gvf4d serve` (with --ray it starts its own Ray cluster on 127.0.0.1) on a fresh
data folder and stage cache. Every worker first runs one warm-up shot (a new process's first shot pays one-time
costs), then the shots, all distinct, are submitted at once and timed from the first submission to the last result.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gvf4d.pipelines.demo import write_shot_files
from gvf4d.service.client import BackendClient, BackendError
from gvf4d.synthetic import make_synthetic_shot

FINISHED = ("done", "failed", "cancelled", "interrupted")


def start_service(data: Path, args: list[str], workers: int) -> tuple[subprocess.Popen, BackendClient]:
    log = open(data.with_name(data.name + ".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "gvf4d.cli", "serve", "--data", str(data), *args],
                            stdout=log, stderr=log)
    lock = data / "backend.lock.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gvf4d serve {' '.join(args)} died: {log.name}")
        if lock.is_file() and json.loads(lock.read_text())["pid"] == proc.pid:
            info = json.loads(lock.read_text())
            client = BackendClient(info["url"], info["token"])
            try:
                if sum(w["alive"] for w in client.health()["workers"]) == workers:
                    return proc, client
            except BackendError:
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    raise RuntimeError(f"gvf4d serve {' '.join(args)}: {workers} workers not alive after 300 s")


def run_all(client: BackendClient, bodies: list[dict]) -> float:
    """Submits every body at once; -> seconds until the last is finished (all must end done)."""
    t0 = time.perf_counter()
    ids = [client.submit(b)["id"] for b in bodies]
    while True:
        jobs = [client.job(i) for i in ids]
        if all(j["state"] in FINISHED for j in jobs):
            break
        time.sleep(0.5)          # as often as a client follows a job: the API shares the local worker's process
    bad = [j for j in jobs if j["state"] != "done"]
    if bad:
        raise RuntimeError(f"job {bad[0]['id']} {bad[0]['state']}: {bad[0]['error']}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, default=6)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--fit-iterations", type=int, default=6)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="gvf4d-bench-ray-"))
    bodies = []
    for seed in range(args.shots + 2):        # the last two are the warm-up shots
        folder = root / f"shot{seed}"
        write_shot_files(make_synthetic_shot(num_frames=args.frames, gaussians_per_part=100, seed=100 + seed),
                         folder, 96)
        bodies.append({"footage": str(folder / "footage"), "canonical_path": str(folder / "canonical.ply"),
                       "fit_size": 48, "fit_iterations": args.fit_iterations})
    shots, warm_up = bodies[:args.shots], bodies[args.shots:]
    configs = [("single worker", 1, cores, []),
               ("ray, 1 actor", 1, cores, ["--ray", "--cpu-actors", "1"]),
               ("ray, 2 actors", 2, max(1, cores // 2), ["--ray", "--cpu-actors", "2"])]
    rows = []
    try:
        for name, workers, threads, extra in configs:
            data = root / name.replace(" ", "").replace(",", "-")
            serve_args = ["--threads", str(threads), *extra] + (["--shared", str(data) + "-shared"] if extra else [])
            proc, client = start_service(data, serve_args, workers)
            try:
                run_all(client, warm_up[:workers])
                seconds = run_all(client, shots)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            rows.append((name, workers, threads, seconds, 3600.0 * len(shots) / seconds))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0][4]
    print(f"{args.shots} shots of {args.frames} frames (fit engine, {args.fit_iterations} steps per frame) on "
          f"{cores} CPU cores\n")
    print("| configuration | workers | torch threads each | wall (s) | shots / hour | vs single worker |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, workers, threads, seconds, rate in rows:
        print(f"| {name} | {workers} | {threads} | {seconds:.1f} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
