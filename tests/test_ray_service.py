"""`gvf4d serve --ray` for real: a Ray cluster of this machine started by the test (`ray start --head` on
127.0.0.1, 2 CPUs, token authentication, no dashboard), a `gvf4d serve --ray ADDRESS` subprocess with two CPU
actors, real files and HTTP. The footage and the results travel through Ray's object store (the data folder and
the shots are outside the shared folder, which holds only the actors' stage cache, so each run starts cold).
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gvf4d.pipelines.generate import generate
from gvf4d.result import ResultFile
from gvf4d.service.client import BackendClient, BackendError
from gvf4d.service.jobs import request_from_json

FINISHED = ("done", "failed", "cancelled", "interrupted")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float, step: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what} not met within {timeout:g} s")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs, token authentication and no dashboard -> (address, environment of
    its clients); stopped at the end by its pid (`ray start --block` stops the processes it started)."""
    folder = tmp_path_factory.mktemp("ray")
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    port = _free_port()
    with open(folder / "head.log", "w") as log:
        head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                                 "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                                 "--disable-usage-stats"], env=env, stdout=log, stderr=log)
    try:
        until(lambda: head.poll() is not None or "Ray runtime started" in (folder / "head.log").read_text(), 120,
              what="the Ray head")
        assert head.poll() is None, (folder / "head.log").read_text()
        yield f"127.0.0.1:{port}", env
    finally:
        head.terminate()
        head.wait(60)


class RayService:
    """`gvf4d serve --ray ADDRESS --threads 1 --cpu-actors 2 --shared SHARED --data DATA`, ready once both actors
    answer."""

    def __init__(self, data: Path, address: str, env: dict, shared: Path):
        self.data, self.address, self.env, self.shared = data, address, env, shared
        self.proc = None

    def start(self) -> "RayService":
        lock = self.data / "backend.lock.json"
        with open(self.data.with_name(self.data.name + ".log"), "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gvf4d.cli", "serve", "--data", str(self.data),
                                          "--ray", self.address, "--threads", "1", "--cpu-actors", "2",
                                          "--shared", str(self.shared)], env=self.env, stdout=log, stderr=log)

        def ready():
            assert self.proc.poll() is None, "the service died"
            if not (lock.is_file() and json.loads(lock.read_text())["pid"] == self.proc.pid):
                return False
            info = json.loads(lock.read_text())
            self.client = BackendClient(info["url"], info["token"])
            try:
                return sum(w["alive"] for w in self.client.health()["workers"]) == 2
            except BackendError:       # 503 until an actor answers
                return False
        until(ready, 120, 0.2, "two ray actors")
        return self

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def wait(self, job_id: str, timeout: float = 180, states=FINISHED) -> dict:
        return until(lambda: (lambda j: j if j["state"] in states else None)(self.client.job(job_id)), timeout,
                     0.2, f"job {job_id} {'/'.join(states)}")

    def worker_running(self, job_id: str) -> dict:
        return until(lambda: next((w for w in self.client.health()["workers"] if w["job"] == job_id), None), 60,
                     0.1, f"a worker running {job_id}")


@pytest.fixture(scope="module")
def service(ray_head, tmp_path_factory):
    address, env = ray_head
    root = tmp_path_factory.mktemp("ray-service")
    srv = RayService(root / "data", address, env, root / "shared").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Six distinct 4-frame synthetic shots (footage/ and canonical.ply each): no job reuses another's stages."""
    from gvf4d.pipelines.demo import write_shot_files
    from gvf4d.synthetic import make_synthetic_shot
    root = tmp_path_factory.mktemp("ray-shots")
    folders = []
    for seed in range(6):
        folder = root / f"shot{seed}"
        write_shot_files(make_synthetic_shot(num_frames=4, gaussians_per_part=40, seed=10 + seed), folder, 64)
        folders.append(folder)
    return folders


def job_body(shot: Path, **kw) -> dict:
    return {"footage": str(shot / "footage"), "canonical_path": str(shot / "canonical.ply"), "frames": 4,
            "fit_size": 32, "fit_iterations": 2, **kw}


def tensors(path: Path) -> dict[str, np.ndarray]:
    f = ResultFile(path)
    return {name: np.asarray(f.array(name)) for name in sorted(f.names)}


def test_ray_six_jobs_over_two_actors_equal_the_single_process_run(service, shots, tmp_path):
    c = service.client
    workers = c.health()["workers"]
    assert [w["kind"] for w in workers] == ["ray", "ray"] and len({w["pid"] for w in workers}) == 2
    assert all(w["device"]["type"] == "cpu" and w["node"] == "127.0.0.1" for w in workers)
    ids = [c.submit(job_body(shot))["id"] for shot in shots]
    most_running = 0

    def all_finished():
        nonlocal most_running
        listed = {j["id"]: j for j in c.jobs()}       # one snapshot of the store (reading job by job races)
        jobs = [listed[i] for i in ids]
        most_running = max(most_running, sum(j["state"] == "running" for j in jobs))
        return jobs if all(j["state"] in FINISHED for j in jobs) else None
    jobs = until(all_finished, 240, 0.1, "six jobs")
    assert [j["state"] for j in jobs] == ["done"] * 6, [j["error"] for j in jobs]
    assert most_running == 2                  # both actors at work, never more than they are

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # the count the actors ran with (serve --threads 1)
    try:
        for shot, job in zip(shots, jobs):
            reference = generate(request_from_json(job_body(shot), tmp_path / job["id"]))
            ray_path = service.data / "jobs" / job["id"] / job["result"]
            # the footage the client submitted, where it finds the plate, not the actor's copy of it
            assert ResultFile(ray_path).metadata["footage"]["path"] == str(shot / "footage")
            ray_result = tensors(ray_path)
            assert ray_result.keys() == tensors(reference.result).keys()
            for name, expected in tensors(reference.result).items():
                assert np.array_equal(ray_result[name], expected), (job["id"], name)
    finally:
        torch.set_num_threads(threads)


def test_ray_job_whose_actor_is_killed_completes_on_another(service, shots):
    c = service.client
    job = c.submit(job_body(shots[0], fit_iterations=40))
    victim = service.worker_running(job["id"])
    service.wait(job["id"], 60, ("running",))
    until(lambda: c.job(job["id"])["stage"] == "fit", 60, 0.1, "the fit stage")
    os.kill(victim["pid"], signal.SIGKILL)
    done = service.wait(job["id"])
    assert done["state"] == "done" and done["attempts"] == 2
    assert "canonical" in done["reused_stages"]        # the first attempt's stages, from the shared cache
    assert ResultFile(service.data / "jobs" / job["id"] / done["result"]).num_frames == 4
    # the lost actor is replaced: two live actors again, the killed process not among them
    pids = until(lambda: (lambda ws: {w["pid"] for w in ws} if sum(w["alive"] for w in ws) == 2 else None)(
        c.health()["workers"]), 120, 0.2, "a replacement actor")
    assert victim["pid"] not in pids


def test_ray_cancel_stops_a_running_job(service, shots):
    c = service.client
    job = c.submit(job_body(shots[1], fit_iterations=1000))
    service.worker_running(job["id"])
    until(lambda: c.job(job["id"])["stage"] == "fit", 60, 0.1, "the fit stage")
    c.cancel(job["id"])
    assert service.wait(job["id"], 60)["state"] == "cancelled"
    until(lambda: all(w["job"] is None for w in c.health()["workers"]), 10, 0.1, "idle actors")
    assert service.wait(c.submit(job_body(shots[1]))["id"])["state"] == "done"     # the actor takes the next


def test_ray_service_restarted_mid_batch_loses_nothing(service, shots):
    c = service.client
    ids = [c.submit(job_body(shot, fit_iterations=8))["id"] for shot in shots[:4]]
    first = service.wait(ids[0])
    until(lambda: any(c.job(i)["state"] == "running" for i in ids[1:]), 60, 0.1, "a running job")
    done_before = {i: (service.data / "jobs" / i / "result.gvf4d").stat().st_mtime_ns
                   for i in ids if c.job(i)["state"] == "done"}
    service.stop(signal.SIGKILL)
    service.start()
    c = service.client
    jobs = [service.wait(i, 240) for i in ids]
    assert [j["state"] for j in jobs] == ["done"] * 4, [j["error"] for j in jobs]
    assert first["id"] in done_before and jobs[0]["attempts"] == 1
    for job in jobs:
        folder = service.data / "jobs" / job["id"]
        assert ResultFile(folder / job["result"]).num_frames == 4
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []     # no temporaries
        if job["id"] in done_before:          # finished before the kill: untouched
            assert (folder / "result.gvf4d").stat().st_mtime_ns == done_before[job["id"]]
    assert any(j["attempts"] == 2 for j in jobs)      # what was running was queued again and run again
