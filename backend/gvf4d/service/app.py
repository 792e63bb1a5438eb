"""The HTTP API (versioned under /v1). Every request needs the bearer token; requests from a foreign browser
Origin or with a Host other than the bound address are refused (no cross-site jobs, no DNS rebinding).

Refusals are one-line `detail` messages the add-on shows verbatim: 422 for a request the validation refuses,
413 for sizes over a budget, 507 when the backend's disk is too full, 503 when the job store fails; never a 500
for a request. Nothing here holds a server thread for long: event streams are async and end when their client
goes, uploads are read asynchronously with a stall timeout (docs/security.md).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from .. import __version__
from ..atomic import atomic_output
from ..limits import Limits
from ..validation import RequestError, check_free_space, check_name, finite, is_disk_full
from .jobs import JOB_KINDS, JobBody, check_job, resolve_result_job
from .server import UPLOAD_STALL_S
from .store import FINISHED, JobStore
from .worker import Worker

API_VERSION = 1
EVENT_POLL_S = 0.25          # how often an event stream looks at its job


class Guard:
    """ASGI middleware checking the Host, the Origin and the bearer token of every request before the app sees
    it (plain ASGI, so streamed responses and uploads pass through it untouched)."""

    def __init__(self, app, token: str, allowed_hosts: set[str], allowed_origins: set[str]):
        self.app, self.token = app, token.encode()
        self.allowed_hosts, self.allowed_origins = allowed_hosts, allowed_origins

    def _refusal(self, headers: Headers) -> JSONResponse | None:
        host = headers.get("host", "")
        if host not in self.allowed_hosts:
            return JSONResponse({"detail": f"host {host!r} is not this backend's address"}, status_code=403)
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            return JSONResponse({"detail": f"requests from origin {origin!r} are not allowed"}, status_code=403)
        auth = headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), self.token)):
            return JSONResponse({"detail": "missing or wrong bearer token (see the backend's lock file)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _one_line(error: RequestValidationError) -> str:
    """pydantic's errors as one line: 'guidance.0: Input should be a finite number; ...' (a job body's fields
    named without the kind pydantic puts before them)."""
    parts = []
    for e in error.errors():
        loc = tuple(e.get("loc", ()))[1:]
        if loc[:1] and loc[0] in JOB_KINDS:
            loc = loc[1:]
        where = ".".join(str(x) for x in loc) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts).replace("\n", " ")


def create_app(store: JobStore, worker: Worker, token: str, allowed_hosts: set[str],
               allowed_origins: set[str] = frozenset(), weights: Path | None = None, limits: Limits | None = None,
               upload_stall_s: float = UPLOAD_STALL_S) -> FastAPI:
    limits = limits or worker.limits
    app = FastAPI(title="GVF4D backend", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json")
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(error)}, status_code=422)

    @app.exception_handler(RequestError)
    async def refused_request(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(sqlite3.Error)
    async def store_failed(request: Request, error: sqlite3.Error) -> JSONResponse:
        full = "full" in str(error)
        return JSONResponse({"detail": f"the backend's job store failed ({error})"
                                       + ("; free some disk space on the backend" if full else "")},
                            status_code=507 if full else 503)

    def job_or_404(job_id: str):
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get("/v1/health")
    def health() -> JSONResponse:
        """The backend's versions, its workers' liveness and devices, the queue and the weights folder; 503 with
        status "degraded" when no worker is alive (docs/design.md §3)."""
        workers = worker.describe_workers()
        status = "ok" if any(w["alive"] for w in workers) else "degraded"
        try:
            queued = len(store.queued())
        except sqlite3.Error:
            queued = None
        present = None
        if weights is not None:
            from ..weights_folder import report
            present = {"folder": str(weights), **{r.name: r.status for r in report(weights)}}
        cuda = torch.cuda.is_available()
        body = {"api_version": API_VERSION, "version": __version__, "status": status, "workers": workers,
                "queued": queued, "torch": torch.__version__, "cuda_version": torch.version.cuda, "weights": present,
                # the fields add-ons before api_version 1 read
                "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None, "running": worker.current}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.post("/v1/jobs", status_code=201)
    def submit(body: JobBody) -> dict:
        """A generation job (`kind` "generate", the default) or a render of a result (`kind` "render",
        docs/render.md: its EXR files are listed and downloaded as the job's files)."""
        data = resolve_result_job(body.model_dump(mode="json"), store, worker.job_dir)
        check_job(data, worker.job_dir("new"), limits)
        check_free_space(worker.data_dir)
        job = store.create(data)
        worker.submit(job.id)
        return job.to_json()

    @app.put("/v1/uploads/{upload_id}/{name}", status_code=201)
    async def upload(upload_id: str, name: str, request: Request) -> dict:
        """Uploads one file (raw body) into an upload folder; submit jobs with `footage` = the returned folder (an
        image sequence) or file (a video), `canonical_path` = an uploaded .ply splat or mesh file, a render job's
        `result` = an uploaded .gvf4d. For a backend on another machine. A declared size over the limit is refused
        before any byte is read (413); the bytes go to a temp file of this request alone, renamed into place once
        complete and removed in every other outcome."""
        if not re.fullmatch(r"[0-9a-f]{8,32}", upload_id):
            raise HTTPException(422, "upload id must be 8-32 hex digits")
        check_name("upload name", name)      # artists' names: spaces and any script, never a path or hidden
        cap = limits.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise HTTPException(422, f"Content-Length {declared!r} is not a size in bytes")
        if declared is not None and int(declared) > cap:
            raise HTTPException(413, f"{name}: {int(declared)} bytes is over the upload limit of {cap} bytes")
        folder = worker.data_dir / "uploads" / upload_id
        check_free_space(folder, needed=int(declared or 0))
        folder.mkdir(parents=True, exist_ok=True)
        size, chunks = 0, request.stream().__aiter__()
        try:
            with atomic_output(folder / name) as tmp, open(tmp, "wb") as f:
                while True:
                    try:
                        chunk = await asyncio.wait_for(chunks.__anext__(), upload_stall_s)
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        raise HTTPException(408, f"{name}: the upload stalled (nothing received for "
                                                 f"{upload_stall_s:g} s)") from None
                    size += len(chunk)
                    if size > cap:
                        raise HTTPException(413, f"{name}: the upload is over the limit of {cap} bytes")
                    f.write(chunk)
        except ClientDisconnect:
            return Response(status_code=400)    # the client went away: its partial file is gone, nobody reads this
        except OSError as e:
            if is_disk_full(e):
                raise HTTPException(507, f"{name}: the backend's disk is full ({e.strerror})") from None
            raise
        return {"folder": str(folder), "file": str(folder / name), "bytes": size}

    @app.get("/v1/jobs")
    def list_jobs() -> list[dict]:
        return [j.to_json() for j in store.list()]

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        return job_or_404(job_id).to_json()

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str, request: Request, timeout: float = 3600.0) -> StreamingResponse:
        """Server-sent events: the job (JSON) each time it changes, until it finishes, the timeout (at most an
        hour) passes or the client goes away."""
        job_or_404(job_id)
        timeout = finite("timeout", timeout, 0.0)

        async def stream():
            last, deadline = None, time.monotonic() + min(timeout, 3600.0)
            while time.monotonic() < deadline and not await request.is_disconnected():
                job = store.get(job_id)
                if job is None:
                    return
                if job.updated != last:
                    last = job.updated
                    yield f"data: {json.dumps(job.to_json())}\n\n"
                if job.state in FINISHED or job.state == "interrupted":
                    return
                await asyncio.sleep(EVENT_POLL_S)
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202)
    def cancel(job_id: str) -> dict:
        job_or_404(job_id)
        worker.cancel(job_id)
        return store.get(job_id).to_json()

    @app.post("/v1/jobs/{job_id}/resume", status_code=202)
    def resume(job_id: str) -> dict:
        job = job_or_404(job_id)
        if job.state not in ("interrupted", "failed", "cancelled"):
            raise HTTPException(409, f"job {job_id} is {job.state}; only interrupted, failed or cancelled jobs resume")
        store.update(job_id, state="queued", stage="", progress=0.0, error=None, attempts=0)
        worker.submit(job_id)
        return store.get(job_id).to_json()

    @app.post("/v1/models/unload")
    def unload_models() -> dict:
        """Drops the networks the worker keeps loaded between jobs and frees their GPU memory (the next job loads
        them again); 409 while a job runs, since it holds them."""
        if worker.current is not None:
            raise HTTPException(409, f"job {worker.current} is running and holds the models; free the GPU memory "
                                     "when it ends")
        unloaded = sorted({kind for kind, _, _ in worker.models.loaded})
        worker.models.unload()
        return {"unloaded": unloaded}

    @app.get("/v1/jobs/{job_id}/files")
    def files(job_id: str) -> list[str]:
        job_or_404(job_id)
        d = worker.job_dir(job_id)
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if d.is_dir() else []

    @app.get("/v1/jobs/{job_id}/files/{name:path}")
    def file(job_id: str, name: str) -> FileResponse:
        job_or_404(job_id)
        root = worker.job_dir(job_id).resolve()
        path = (root / name).resolve()
        if root not in path.parents or not path.is_file() or path.name.startswith("."):
            raise HTTPException(404, f"no file {name!r} in job {job_id}")
        return FileResponse(path)

    @app.delete("/v1/jobs/{job_id}", status_code=204)
    def delete(job_id: str) -> Response:
        job = job_or_404(job_id)
        if job.state in ("running", "queued"):
            worker.cancel(job_id)
            for _ in range(100):           # wait (up to 10 s) for the worker to let go of it
                if store.get(job_id).state != "running":
                    break
                time.sleep(0.1)
        shutil.rmtree(worker.job_dir(job_id), ignore_errors=True)
        store.delete(job_id)
        return Response(status_code=204)

    return app
