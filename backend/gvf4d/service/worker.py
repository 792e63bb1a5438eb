"""One worker thread runs the jobs in order; models stay loaded between jobs. The loop survives any exception:
a job's failure ends that job, and a failure of the job store itself (a full disk, a locked database) is logged
and retried after a back-off, so the worker never stops and no job's outcome is lost. The worker beats a
heartbeat that `/v1/health` reports, and cleans `uploads/` and `cache/` between jobs. Cancellation is checked
between steps and frees GPU memory."""
from __future__ import annotations

import logging
import os
import platform
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from ..footage import FootageError
from ..limits import Limits
from ..models.weights import WeightsError
from ..pipelines.model_registry import ModelRegistry, release_gpu_memory
from ..pipelines.stage_cache import StageCache
from ..progress import Cancelled
from ..validation import is_disk_full
from .jobs import run_job
from .retention import CACHE_RETENTION, GRACE_S, UPLOADS_RETENTION, RetentionPolicy, prune, remove_temporaries
from .store import JobStore

log = logging.getLogger("gvf4d.service")
USER_ERRORS = (FootageError, WeightsError, ValueError, FileNotFoundError)
HEARTBEAT_S = 1.0          # an idle worker beats at least this often
STALE_S = 30.0             # an idle worker silent for longer is reported not alive
RETRY_S = (0.5, 30.0)      # the first and the longest wait before trying a failing job store again
MAINTENANCE_S = 600.0      # uploads/ and cache/ are cleaned between jobs at most this often


def failure_message(error: BaseException) -> str:
    """A failed job's `error`: the problem itself for the user's input or the machine, else the exception."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "out of GPU memory: try fewer frames, a smaller splat, or close other GPU programs"
    if is_disk_full(error):
        where = f" writing {error.filename}" if error.filename else ""
        return (f"the backend's disk is full ({error.strerror or os.strerror(error.errno)}{where}): free some space, "
                "then resume the job")
    if isinstance(error, USER_ERRORS):
        return str(error)
    return f"internal error: {type(error).__name__}: {error}"


def device_description() -> dict:
    """The device this process computes on, as `/v1/health` lists it."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return {"type": "cuda", "name": torch.cuda.get_device_name(), "vram_total": total, "vram_free": free}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "vram_total": None, "vram_free": None}


def record_outcome(store: JobStore, job_id: str, fields: dict, stop: threading.Event, beat: Callable[[], None]) -> None:
    """Stores a job's outcome, trying again after a back-off while the store fails (beating meanwhile); gives up
    only when `stop` is set (the job, left running, is then queued again at the next start)."""
    delay = RETRY_S[0]
    while True:
        try:
            store.update(job_id, **fields)
            return
        except Exception as e:
            log.error("worker: job %s ended %s but cannot be recorded (%s: %s); trying again in %.1f s", job_id,
                      fields.get("state"), type(e).__name__, e, delay)
        beat()
        if stop.wait(delay):
            return
        delay = min(2 * delay, RETRY_S[1])


def clean_data_folder(data_dir: Path, store: JobStore, retention: dict[str, RetentionPolicy],
                      temporaries_min_age_s: float = GRACE_S) -> None:
    """Applies the retention policies of DATA/uploads/ and DATA/cache/ (keeping the uploads that unfinished jobs
    read) and removes their temporaries older than temporaries_min_age_s."""
    uploads, cache = data_dir / "uploads", data_dir / "cache"
    for folder in (uploads, cache):
        remove_temporaries(folder, temporaries_min_age_s)
    used = set()
    for job in store.list():
        if job.state in ("queued", "running", "interrupted"):
            for key in ("footage", "canonical_path", "result"):
                path = Path(job.request.get(key) or "")
                if uploads in path.parents:
                    used.add(uploads / path.relative_to(uploads).parts[0])
    prune(uploads, 1, retention["uploads"], keep=used)
    prune(cache, 2, retention["cache"])


class Worker:
    id = "local-0"
    kind = "local"

    def __init__(self, store: JobStore, data_dir: Path, limits: Limits | None = None,
                 uploads: RetentionPolicy = UPLOADS_RETENTION, cache: RetentionPolicy = CACHE_RETENTION):
        self.store = store
        self.data_dir = Path(data_dir)
        self.limits = limits or Limits.from_env()
        self.retention = {"uploads": uploads, "cache": cache}
        self.cache = StageCache(self.data_dir / "cache")
        self.models = ModelRegistry()
        self.queue: "queue.Queue[str]" = queue.Queue()
        self.cancel_flags: dict[str, threading.Event] = {}
        self.current: str | None = None
        self.heartbeat = time.monotonic()
        self._next_maintenance = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="gvf4d-worker", daemon=True)

    def start(self) -> None:
        """Cleans what a killed backend left (every temporary) and starts the loop on the queued jobs."""
        try:
            self._clean(temporaries_min_age_s=0.0)
        except Exception as e:
            log.error("worker: cleaning uploads/ and cache/ failed (%s: %s)", type(e).__name__, e)
        self._next_maintenance = time.monotonic() + MAINTENANCE_S
        for job_id in self.store.queued():
            self.submit(job_id)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the loop; a running job stops at its next check and is recorded interrupted (it can be resumed)."""
        self._stop.set()
        for flag in list(self.cancel_flags.values()):
            flag.set()
        self.queue.put("")
        if self.thread.is_alive():
            self.thread.join(timeout)

    def submit(self, job_id: str) -> None:
        self.cancel_flags[job_id] = threading.Event()
        self.queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job and job.state in ("queued", "interrupted"):
            self.store.update(job_id, state="cancelled", stage="")
        if job_id in self.cancel_flags:
            self.cancel_flags[job_id].set()

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    @property
    def heartbeat_age(self) -> float:
        return time.monotonic() - self.heartbeat

    @property
    def alive(self) -> bool:
        """The loop runs and beats (a running job beats at each progress or cancellation check)."""
        return self.thread.is_alive() and (self.current is not None or self.heartbeat_age < STALE_S)

    def describe(self) -> dict:
        """This worker as `/v1/health` lists it (docs/design.md §3)."""
        return {"id": self.id, "kind": self.kind, "alive": self.alive, "job": self.current,
                "heartbeat_age_s": round(self.heartbeat_age, 3), "device": device_description(),
                "models": [{"kind": k, "folder": f, "device": d} for k, f, d in self.models.loaded]}

    def describe_workers(self) -> list[dict]:
        """Every worker of the service: this one (the --ray dispatcher lists one per actor)."""
        return [self.describe()]

    def _loop(self) -> None:
        delay = RETRY_S[0]
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                job_id = self.queue.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                job_id = None
            if self._stop.is_set():
                break
            try:
                if job_id:
                    self._take(job_id)
                elif job_id is None:
                    self._maintain()
                delay = RETRY_S[0]
            except BaseException as e:    # the job store or the disk failed, SystemExit of a library included
                what = f"job {job_id} could not be started" if job_id else "cleaning uploads/ and cache/ failed"
                log.error("worker: %s (%s: %s); trying again in %.1f s", what, type(e).__name__, e, delay)
                if job_id:
                    self.queue.put(job_id)    # still queued in the store
                self._stop.wait(delay)
                delay = min(2 * delay, RETRY_S[1])

    def _take(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != "queued":
            self.cancel_flags.pop(job_id, None)
            return
        flag = self.cancel_flags.setdefault(job_id, threading.Event())
        if not self.store.start(job_id):
            return
        self.current = job_id
        try:
            outcome = self._run(job_id, job.request, flag)
        finally:
            self.current = None
        self._record(job_id, outcome)
        self.cancel_flags.pop(job_id, None)

    def _record(self, job_id: str, fields: dict) -> None:
        record_outcome(self.store, job_id, fields, self._stop, self._beat)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _run(self, job_id: str, request: dict, flag: threading.Event) -> dict:
        """Runs one job; returns the fields that record its outcome. Never raises."""
        job_dir = self.job_dir(job_id)
        last = [0.0]

        def should_cancel() -> bool:
            self.heartbeat = time.monotonic()
            return flag.is_set()

        def progress(stage: str, fraction: float) -> None:
            self.heartbeat = now = time.monotonic()
            if now - last[0] > 0.2 or fraction >= 1.0:
                last[0] = now
                try:
                    self.store.update(job_id, stage=stage, progress=float(fraction))
                except Exception as e:      # progress only informs; the outcome is recorded with retries
                    log.warning("worker: job %s progress not recorded (%s: %s)", job_id, type(e).__name__, e)

        try:
            remove_temporaries(job_dir)     # a run killed during its export left these
            outcome = run_job(request, job_dir, self.limits, progress, should_cancel, self.cache, self.models)
            files = [str(p.relative_to(job_dir)) for p in outcome.files]
            return dict(state="done", stage="done", progress=1.0, result=files[0], reused=outcome.reused,
                        timings=outcome.timings)
        except Cancelled:
            return dict(state="interrupted" if self._stop.is_set() else "cancelled", stage="")
        except BaseException as e:          # any other failure ends this job, never the worker
            message = failure_message(e)
            if message.startswith("internal error"):
                log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            return dict(state="failed", error=message)
        finally:
            try:
                release_gpu_memory()
            except Exception:
                log.exception("worker: releasing GPU memory failed")

    def _maintain(self) -> None:
        """Cleans uploads/ and cache/ when MAINTENANCE_S have passed since the last time."""
        if time.monotonic() >= self._next_maintenance:
            self._next_maintenance = time.monotonic() + MAINTENANCE_S
            self._clean(GRACE_S)

    def _clean(self, temporaries_min_age_s: float) -> None:
        clean_data_folder(self.data_dir, self.store, self.retention, temporaries_min_age_s)
