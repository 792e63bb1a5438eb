"""`gvf4d serve --ray`: the service's jobs run on Ray actors across a cluster, N at once.

`ShotActor` is a Ray actor: one per GPU (`num_gpus=1`), plus CPU actors for fit jobs, each keeping its
ModelRegistry and a stage cache warm between jobs and running one job at a time (`jobs.run_job`: a generation
or a render). It is threaded, so its status is read and a cancel reaches it while a job runs; the job stops at
its next check.

`RayWorker` is the service's side of one actor, a thread like the local Worker: it takes the next job its actor
may run, sends the job's files through Ray's object store (inputs under a shared folder are read in place),
follows its progress, writes the result files (temp name, then rename) and records the outcome. When the actor's
process or node dies the job goes back to the queue for another actor (bounded attempts, the job store's
`attempts`), and the worker starts a new actor. A job out of memory is retried only on another kind of device.

`RayDispatcher` holds the queue and the workers and offers app.py the local Worker's interface.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray
import torch

from ..limits import Limits
from ..pipelines.model_registry import ModelRegistry, release_gpu_memory
from ..pipelines.stage_cache import StageCache
from ..progress import Cancelled
from .jobs import run_job
from .ray_cluster import RaySettings, connect, disconnect
from .ray_files import pack_inputs, under, unpack_inputs, write_result_files
from .retention import CACHE_RETENTION, UPLOADS_RETENTION, RetentionPolicy, prune, remove_temporaries
from .store import MAX_ATTEMPTS, JobStore
from .worker import (HEARTBEAT_S, MAINTENANCE_S, STALE_S, clean_data_folder, device_description, failure_message,
                     record_outcome)

log = logging.getLogger("gvf4d.service")
POLL_S = 0.25           # how often a worker reads its running actor's status (progress, cancel, liveness)
RECONCILE_S = 10.0      # how often the dispatcher looks for GPUs that joined the cluster
ACTOR_CONCURRENCY = 4   # a running job, status reads, cancel, unload
STALE_WORK = RetentionPolicy(max_age_s=86400.0, max_bytes=2**62)   # work/ folders this old: killed actors' leftovers


# ---------------------------------------------------------------------------------------------------- actor
def device_kind(device: dict) -> str:
    """What an out-of-memory is a property of: the GPU model, or "cpu"."""
    return device["name"] if device["type"] == "cuda" else "cpu"


def node_folder() -> Path:
    """This node's private folder for the actors of this user: cache/ (the stage cache without a shared folder)
    and work/ (each running job's inputs and results)."""
    folder = Path(tempfile.gettempdir()) / f"gvf4d-ray-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


class ShotActor:
    """Runs one job at a time (a generation or a render), with its networks kept loaded and a stage cache between
    jobs (the shared folder's, else the node's, so the actors of a node share it)."""

    def __init__(self, threads: int, limits: Limits, shared: Optional[str], cache_policy: RetentionPolicy):
        torch.set_num_threads(threads)
        self.threads, self.limits, self.cache_policy = threads, limits, cache_policy
        self.cache = StageCache(Path(shared) / "cache" if shared else node_folder() / "cache")
        self.work = node_folder() / "work"
        self.work.mkdir(exist_ok=True)
        prune(self.work, 1, STALE_WORK)          # what actors killed mid-job left
        self.models = ModelRegistry()
        self.job: Optional[str] = None
        self.stage, self.progress = "", 0.0
        self._cancel = threading.Event()

    def status(self) -> dict:
        """The actor's state: its job and progress, device, loaded models, process and node."""
        return {"job": self.job, "stage": self.stage, "progress": self.progress, "device": device_description(),
                "models": [{"kind": k, "folder": f, "device": d} for k, f, d in self.models.loaded],
                "pid": os.getpid(), "node": ray.util.get_node_ip_address()}

    def cancel(self, job_id: str) -> None:
        if self.job == job_id:
            self._cancel.set()

    def unload(self) -> list[str]:
        """Drops the loaded networks unless a job runs; returns the kinds dropped."""
        if self.job is not None:
            return []
        kinds = sorted({kind for kind, _, _ in self.models.loaded})
        self.models.unload()
        return kinds

    def run(self, job_id: str, request: dict, bundle: dict, job_dir: Optional[str]) -> dict:
        """Runs one job. job_dir: the service's job folder when this node sees it (a shared data folder): the
        result is written there; else in a work folder of the node and returned as bytes. -> {"state": "done",
        "files": {name: bytes | None}, "reused", "timings"} | {"state": "cancelled"} | {"state": "failed",
        "error", "oom", "device", "trace"}. Never raises."""
        torch.set_num_threads(self.threads)       # the count applies per thread; Ray runs calls on a pool
        self.job, self.stage, self.progress = job_id, "starting", 0.0
        self._cancel.clear()
        work = Path(tempfile.mkdtemp(prefix=f"{job_id}.", dir=self.work))
        out = Path(job_dir) if job_dir else work / "out"

        def progress(stage: str, fraction: float) -> None:
            self.stage, self.progress = stage, float(fraction)

        try:
            remove_temporaries(out)
            local = unpack_inputs(request, bundle, work / "in")
            outcome = run_job(local, out, self.limits, progress, self._cancel.is_set, self.cache, self.models)
            names = [str(p.relative_to(out)) for p in outcome.files]
            files = {n: (None if job_dir else (out / n).read_bytes()) for n in names}
            return {"state": "done", "files": files, "reused": outcome.reused, "timings": outcome.timings}
        except Cancelled:
            return {"state": "cancelled"}
        except BaseException as e:
            oom = isinstance(e, torch.cuda.OutOfMemoryError)
            return {"state": "failed", "error": failure_message(e), "oom": oom,
                    "device": device_kind(device_description()), "trace": traceback.format_exc()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self.job, self.stage = None, ""
            try:
                release_gpu_memory()
                prune(self.cache.root, 2, self.cache_policy)
            except Exception:
                traceback.print_exc()


RemoteShotActor = ray.remote(ShotActor)


# ---------------------------------------------------------------------------------------------------- workers
class ActorLost(RuntimeError):
    """The actor's process or node died, or it stopped answering."""


class RayWorker:
    """The service's side of one actor (docs/design.md §3: one worker per actor): a thread that survives any
    exception, beats a heartbeat at each answer of its actor, and starts a new actor when its own is lost."""

    kind = "ray"

    def __init__(self, dispatcher: "RayDispatcher", worker_id: str, gpu: bool):
        self.dispatcher, self.id, self.gpu = dispatcher, worker_id, gpu
        self.actor = None
        self.ready = False
        self.status: dict = {}
        self.current: Optional[str] = None
        self.heartbeat = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name=f"gvf4d-{worker_id}", daemon=True)

    @property
    def device_kind(self) -> Optional[str]:
        return device_kind(self.status["device"]) if self.status else None

    @property
    def heartbeat_age(self) -> float:
        return time.monotonic() - self.heartbeat

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.ready and self.heartbeat_age < STALE_S

    def describe(self) -> dict:
        """This worker as `/v1/health` lists it (docs/design.md §3), with its actor's process and node."""
        s = self.status
        device = s.get("device") or {"type": "cuda" if self.gpu else "cpu", "name": None, "vram_total": None,
                                     "vram_free": None}
        return {"id": self.id, "kind": self.kind, "alive": self.alive, "job": self.current,
                "heartbeat_age_s": round(self.heartbeat_age, 3), "device": device, "models": s.get("models", []),
                "node": s.get("node"), "pid": s.get("pid")}

    # the actor ------------------------------------------------------------------------------------------
    def _start_actor(self) -> None:
        """A GPU actor holds one GPU; a CPU actor `threads` CPUs and sees no GPU (Ray leaves the GPUs of its node
        visible to an actor that asks for none)."""
        d = self.dispatcher
        options = (dict(num_gpus=1, num_cpus=1) if self.gpu else
                   dict(num_gpus=0, num_cpus=d.threads, runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}))
        self.actor = RemoteShotActor.options(max_concurrency=ACTOR_CONCURRENCY, max_restarts=0, **options).remote(
            d.threads, d.limits, str(d.settings.shared) if d.settings.shared else None, d.cache_policy)
        self.ready, self._ping = False, self.actor.status.remote()

    def _drop_actor(self, why: str) -> None:
        log.warning("ray worker %s: actor lost (%s); starting another", self.id, why)
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:
            pass
        self.actor, self.ready, self.status = None, False, {}

    def _await_actor(self, timeout: float) -> None:
        """Waits up to timeout for the actor to answer its first status (it may wait for a free GPU or CPU)."""
        done, _ = ray.wait([self._ping], timeout=timeout)
        if done:
            try:
                self.status = ray.get(self._ping)
                self.ready, self.heartbeat = True, time.monotonic()
            except ray.exceptions.RayError as e:
                self._drop_actor(f"{type(e).__name__}: it did not start")
                self.dispatcher.stopping.wait(HEARTBEAT_S)

    def _ask(self, ref, timeout: float):
        """The answer of one actor call; ActorLost when the actor died or did not answer within timeout."""
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise ActorLost(f"no answer within {timeout:g} s") from None
        except ray.exceptions.RayError as e:
            raise ActorLost(f"{type(e).__name__}: {e}".splitlines()[0]) from None

    # the loop ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        d = self.dispatcher
        last_ping = time.monotonic()
        while not d.stopping.is_set():
            try:
                if self.actor is None:
                    self._start_actor()
                if not self.ready:
                    self._await_actor(HEARTBEAT_S)
                    continue
                job_id = d.take(self, HEARTBEAT_S)
                if job_id is not None:
                    self._run(job_id)
                elif time.monotonic() - last_ping > HEARTBEAT_S:
                    self.status, last_ping = self._ask(self.actor.status.remote(), STALE_S), time.monotonic()
                    self.heartbeat = last_ping
            except ActorLost as e:
                self._drop_actor(str(e))
            except BaseException as e:        # the job store or the disk failed: log, wait, carry on
                log.error("ray worker %s: %s: %s", self.id, type(e).__name__, e)
                d.stopping.wait(HEARTBEAT_S)

    def _run(self, job_id: str) -> None:
        """Runs one claimed job on the actor and records its outcome; ActorLost after requeueing it."""
        d = self.dispatcher
        self.current = job_id
        try:
            fields = self._follow(job_id)
        except ActorLost as e:
            d.after_loss(job_id, str(e))
            raise
        finally:
            self.current = None
        if fields is not None:           # None: it went back to the queue
            record_outcome(d.store, job_id, fields, d.stopping, self._beat)
            d.finished(job_id)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _follow(self, job_id: str) -> Optional[dict]:
        """Sends the job, relays progress and cancel until it ends; -> the fields recording its outcome (None when
        it went back to the queue)."""
        d = self.dispatcher
        job = d.store.get(job_id)
        if job is None:                  # deleted since it was claimed
            return dict(state="cancelled", stage="")
        flag = d.cancel_flags.setdefault(job_id, threading.Event())
        job_dir = d.job_dir(job_id)
        shared_out = under(job_dir, d.settings.shared)
        remove_temporaries(job_dir)      # a service killed while writing this job's results left these
        try:
            bundle = pack_inputs(job.request, d.settings.shared)
        except OSError as e:
            return dict(state="failed", error=failure_message(e))
        run = self.actor.run.remote(job_id, job.request, bundle, str(job_dir) if shared_out else None)
        del bundle
        status, answered, shown = self.actor.status.remote(), time.monotonic(), None
        while not ray.wait([run], timeout=POLL_S)[0]:
            if flag.is_set():
                self.actor.cancel.remote(job_id)
            if ray.wait([status], timeout=0)[0]:
                self.status = self._ask(status, 0)
                self.heartbeat = answered = time.monotonic()
                if self.status["job"] == job_id and (self.status["stage"], self.status["progress"]) != shown:
                    shown = (self.status["stage"], self.status["progress"])
                    d.record_progress(job_id, *shown)
                status = self.actor.status.remote()
            elif time.monotonic() - answered > STALE_S:
                raise ActorLost(f"no answer for {STALE_S:g} s")
        outcome = self._ask(run, STALE_S)
        self.heartbeat = time.monotonic()
        if outcome["state"] == "done":
            if not shared_out:
                write_result_files(job_dir, outcome["files"])
            return dict(state="done", stage="done", progress=1.0, result=next(iter(outcome["files"])),
                        reused=outcome["reused"], timings=outcome["timings"])
        if outcome["state"] == "cancelled":
            return dict(state="interrupted" if d.stopping.is_set() else "cancelled", stage="")
        if outcome["error"].startswith("internal error"):
            log.error("job %s failed on %s:\n%s", job_id, self.id, outcome["trace"])
        if outcome["oom"] and d.retry_elsewhere(job_id, outcome["device"]):
            return None
        return dict(state="failed", error=outcome["error"])


# ---------------------------------------------------------------------------------------------------- dispatcher
@dataclass
class _Queued:
    job_id: str
    gpu_only: bool              # the gvf engine: GPU actors only, unless the cluster has none


class ClusterModels:
    """The networks the actors hold, with the ModelRegistry's `loaded` and `unload()` (app.py's "free GPU
    memory" reaches every idle actor)."""

    def __init__(self, dispatcher: "RayDispatcher"):
        self.dispatcher = dispatcher

    @property
    def loaded(self) -> list[tuple[str, str, str]]:
        return [(m["kind"], m["folder"], m["device"]) for w in self.dispatcher.workers
                for m in w.status.get("models", [])]

    def unload(self) -> None:
        refs = [w.actor.unload.remote() for w in self.dispatcher.workers if w.ready and w.actor is not None]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=STALE_S)
        for w in self.dispatcher.workers:
            if w.status:
                w.status["models"] = []


class RayDispatcher:
    """The --ray counterpart of the local Worker, with its interface (submit, cancel, job_dir, current, models,
    describe_workers, start, stop): a queue of jobs, one RayWorker per actor, and a maintenance thread that
    cleans the data folder and adds actors for GPUs that join the cluster."""

    def __init__(self, store: JobStore, data_dir: Path, settings: RaySettings, limits: Limits | None = None,
                 uploads: RetentionPolicy = UPLOADS_RETENTION, cache: RetentionPolicy = CACHE_RETENTION):
        self.store, self.data_dir, self.settings = store, Path(data_dir), settings
        self.limits = limits or Limits.from_env()
        self.retention = {"uploads": uploads, "cache": cache}
        self.cache_policy = cache
        self.threads = torch.get_num_threads()     # the service's count (`serve --threads`), in every actor
        self.workers: list[RayWorker] = []
        self.models = ClusterModels(self)
        self.cancel_flags: dict[str, threading.Event] = {}
        self.stopping = threading.Event()
        self.address: Optional[str] = None
        self._queue: list[_Queued] = []
        self._oom_on: dict[str, set[str]] = {}      # job -> the device kinds it ran out of memory on
        self._cond = threading.Condition()
        self._maintenance = threading.Thread(target=self._maintain, name="gvf4d-ray-maintenance", daemon=True)

    # the Worker interface -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Cleans what a killed backend left, joins (or starts) the cluster, starts one worker per GPU and the CPU
        workers, and queues the store's queued jobs."""
        try:
            clean_data_folder(self.data_dir, self.store, self.retention, temporaries_min_age_s=0.0)
        except Exception as e:
            log.error("ray: cleaning uploads/ and cache/ failed (%s: %s)", type(e).__name__, e)
        self.address = connect(self.settings)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpu_actors = self.settings.cpu_actors
        if cpu_actors is None:
            cpu_actors = 0 if gpus else max(1, int(resources.get("CPU", 1)) // self.threads)
        for _ in range(gpus):
            self._add_worker(gpu=True)
        for _ in range(cpu_actors):
            self._add_worker(gpu=False)
        log.info("ray: %s, %d GPU and %d CPU actors, %d torch threads each", self.address, gpus, cpu_actors,
                 self.threads)
        for job_id in self.store.queued():
            self.submit(job_id)
        self._maintenance.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the workers (running jobs stop at their next check and are recorded interrupted) and leaves the
        cluster."""
        self.stopping.set()
        for flag in list(self.cancel_flags.values()):
            flag.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        disconnect()

    def submit(self, job_id: str) -> None:
        job = self.store.get(job_id)
        self.cancel_flags[job_id] = threading.Event()
        with self._cond:
            self._queue.append(_Queued(job_id, job is not None and job.request.get("engine") == "gvf"))
            self._cond.notify_all()

    def cancel(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job and job.state in ("queued", "interrupted"):
            self.store.update(job_id, state="cancelled", stage="")
        with self._cond:
            self._queue = [q for q in self._queue if q.job_id != job_id]
        if job_id in self.cancel_flags:
            self.cancel_flags[job_id].set()

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    @property
    def current(self) -> Optional[str]:
        """A running job (None when every actor is idle)."""
        return next((w.current for w in self.workers if w.current is not None), None)

    def describe_workers(self) -> list[dict]:
        return [w.describe() for w in self.workers]

    # what the workers call --------------------------------------------------------------------------------------
    def take(self, worker: RayWorker, timeout: float) -> Optional[str]:
        """The first queued job this worker's actor may run, claimed in the store (running, one more attempt);
        None after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.stopping.is_set():
                has_gpu = any(w.gpu for w in self.workers)
                for q in self._queue:
                    if (q.gpu_only and has_gpu and not worker.gpu) or \
                            worker.device_kind in self._oom_on.get(q.job_id, ()):
                        continue
                    self._queue.remove(q)
                    if self.store.start(q.job_id):
                        return q.job_id
                    self.cancel_flags.pop(q.job_id, None)      # cancelled or deleted meanwhile
                    break
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
        return None

    def record_progress(self, job_id: str, stage: str, fraction: float) -> None:
        try:
            self.store.update(job_id, stage=stage, progress=float(fraction))
        except Exception as e:       # progress only informs; the outcome is recorded with retries
            log.warning("ray: job %s progress not recorded (%s: %s)", job_id, type(e).__name__, e)

    def finished(self, job_id: str) -> None:
        self.cancel_flags.pop(job_id, None)
        self._oom_on.pop(job_id, None)

    def _requeue(self, job_id: str) -> None:
        self.store.update(job_id, state="queued", stage="", progress=0.0)
        with self._cond:
            job = self.store.get(job_id)
            self._queue.insert(0, _Queued(job_id, job.request.get("engine") == "gvf"))
            self._cond.notify_all()

    def after_loss(self, job_id: str, why: str) -> None:
        """The actor running job_id was lost: the job goes back to the front of the queue while it has attempts
        left, else it fails saying why."""
        job = self.store.get(job_id)
        if job is None:
            return
        flag = self.cancel_flags.get(job_id)
        if flag is not None and flag.is_set():
            fields = dict(state="interrupted" if self.stopping.is_set() else "cancelled", stage="")
        elif job.attempts < MAX_ATTEMPTS:
            log.warning("ray: job %s lost its actor (%s); queued again (attempt %d of %d)", job_id, why,
                        job.attempts + 1, MAX_ATTEMPTS)
            self._requeue(job_id)
            return
        else:
            fields = dict(state="failed", error=f"the worker running it was lost {job.attempts} times (last: {why})")
        record_outcome(self.store, job_id, fields, self.stopping, lambda: None)
        self.finished(job_id)

    def retry_elsewhere(self, job_id: str, device: str) -> bool:
        """After an out-of-memory on `device`: queues the job for another kind of device when the cluster has one
        and the job has attempts left; False otherwise."""
        tried = self._oom_on.setdefault(job_id, set())
        tried.add(device)
        job = self.store.get(job_id)
        others = {w.device_kind for w in self.workers if w.ready} - tried - {None}
        if job is None or job.attempts >= MAX_ATTEMPTS or not others:
            return False
        log.warning("ray: job %s ran out of memory on %s; queued again for %s", job_id, device,
                    ", ".join(sorted(others)))
        self._requeue(job_id)
        return True

    # workers and maintenance -----------------------------------------------------------------------------------
    def _add_worker(self, gpu: bool) -> None:
        n = sum(1 for w in self.workers if w.gpu == gpu)
        worker = RayWorker(self, f"ray-{'gpu' if gpu else 'cpu'}-{n}", gpu)
        self.workers.append(worker)
        worker.thread.start()

    def _maintain(self) -> None:
        """Cleans uploads/ and cache/ every MAINTENANCE_S and starts a worker for each GPU that joined."""
        next_clean = 0.0
        while not self.stopping.wait(RECONCILE_S):
            try:
                gpus = int(ray.cluster_resources().get("GPU", 0))
                for _ in range(gpus - sum(1 for w in self.workers if w.gpu)):
                    self._add_worker(gpu=True)
                if time.monotonic() >= next_clean:
                    next_clean = time.monotonic() + MAINTENANCE_S
                    clean_data_folder(self.data_dir, self.store, self.retention)
            except Exception as e:
                log.error("ray maintenance: %s: %s", type(e).__name__, e)
