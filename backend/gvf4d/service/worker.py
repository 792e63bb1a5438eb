"""One worker thread runs the jobs in order; models stay loaded between jobs; a job's failure ends that job,
never the service. Cancellation is checked between steps and frees GPU memory."""
from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import traceback
from pathlib import Path

import torch

from ..footage import FootageError
from ..models.weights import WeightsError
from ..pipelines.generate import LoadedModels, generate
from ..pipelines.stage_cache import StageCache
from ..progress import Cancelled
from .jobs import request_from_json
from .store import JobStore

log = logging.getLogger("gvf4d.service")
USER_ERRORS = (FootageError, WeightsError, ValueError, FileNotFoundError)


class Worker:
    def __init__(self, store: JobStore, data_dir: Path):
        self.store = store
        self.data_dir = Path(data_dir)
        self.cache = StageCache(self.data_dir / "cache")
        self.models = LoadedModels()
        self.queue: "queue.Queue[str]" = queue.Queue()
        self.cancel_flags: dict[str, threading.Event] = {}
        self.current: str | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="gvf4d-worker", daemon=True)

    def start(self) -> None:
        for job_id in self.store.queued():
            self.submit(job_id)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        for flag in self.cancel_flags.values():
            flag.set()
        self.queue.put("")

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

    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = self.queue.get()
            if not job_id or self._stop.is_set():
                continue
            job = self.store.get(job_id)
            if job is None or job.state != "queued":
                continue
            self.current = job_id
            try:
                self._run(job_id, job.request)
            finally:
                self.current = None
                self.cancel_flags.pop(job_id, None)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _run(self, job_id: str, request: dict) -> None:
        flag = self.cancel_flags.setdefault(job_id, threading.Event())
        self.store.update(job_id, state="running", stage="starting", progress=0.0)
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.2 or fraction >= 1.0:
                last[0] = now
                self.store.update(job_id, stage=stage, progress=float(fraction))

        try:
            req = request_from_json(request, self.job_dir(job_id))
            outcome = generate(req, progress, flag.is_set, self.cache, self.models)
            files = [str(p.relative_to(self.job_dir(job_id))) for p in outcome.files]
            self.store.update(job_id, state="done", stage="done", progress=1.0, result=files[0],
                              reused=outcome.reused, timings=outcome.timings)
        except Cancelled:
            self.store.update(job_id, state="cancelled", stage="")
        except torch.cuda.OutOfMemoryError:
            self.store.update(job_id, state="failed", error="out of GPU memory: try fewer frames, a smaller splat, "
                                                             "or close other GPU programs")
        except USER_ERRORS as e:
            self.store.update(job_id, state="failed", error=str(e))
        except Exception as e:  # never let one job end the service
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            self.store.update(job_id, state="failed", error=f"internal error: {type(e).__name__}: {e}")
