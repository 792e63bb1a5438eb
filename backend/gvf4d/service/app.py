"""The HTTP API (versioned under /v1). Every request needs the bearer token; requests from a foreign browser
Origin or with a Host other than the bound address are refused (no cross-site jobs, no DNS rebinding)."""
from __future__ import annotations

import hmac
import json
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from .. import __version__
from .jobs import JobRequest
from .store import FINISHED, JobStore
from .worker import Worker

MAX_UPLOAD = 8 * 2**30


def create_app(store: JobStore, worker: Worker, token: str, allowed_hosts: set[str],
               allowed_origins: set[str] = frozenset(), weights: Path | None = None) -> FastAPI:
    app = FastAPI(title="GVF4D backend", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        if host not in allowed_hosts:
            return JSONResponse({"detail": f"host {host!r} is not this backend's address"}, status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed_origins:
            return JSONResponse({"detail": f"requests from origin {origin!r} are not allowed"}, status_code=403)
        auth = request.headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode())):
            return JSONResponse({"detail": "missing or wrong bearer token (see the backend's lock file)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    def job_or_404(job_id: str):
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get("/v1/health")
    def health() -> dict:
        cuda = torch.cuda.is_available()
        present = None
        if weights is not None:
            from ..weights_folder import report
            present = {"folder": str(weights), **{r.name: r.status for r in report(weights)}}
        return {"version": __version__, "torch": torch.__version__, "cuda": cuda,
                "gpu": torch.cuda.get_device_name() if cuda else None, "running": worker.current,
                "queued": len(store.queued()), "weights": present}

    @app.post("/v1/jobs", status_code=201)
    def submit(body: JobRequest) -> dict:
        if body.canonical != "trellis" and not body.canonical_path:
            raise HTTPException(422, f"canonical '{body.canonical}' needs 'canonical_path' (the file)")
        for label, p in (("footage", body.footage), (f"canonical {body.canonical}", body.canonical_path)):
            if p is not None and not Path(p).exists():
                raise HTTPException(422, f"{label} {p} does not exist on the backend's machine")
        if (body.engine == "gvf" or body.canonical == "trellis") and not body.weights:
            raise HTTPException(422, "the gvf engine and the trellis canonical need 'weights' (a folder with gvf/, "
                                     "dinov2/ and, for trellis, trellis/)")
        job = store.create(body.model_dump(mode="json"))
        worker.submit(job.id)
        return job.to_json()

    @app.put("/v1/uploads/{upload_id}/{name}", status_code=201)
    async def upload(upload_id: str, name: str, request: Request) -> dict:
        """Uploads one file (raw body) into an upload folder; submit jobs with `footage` = the returned folder (an
        image sequence) or file (a video), and `canonical_path` = an uploaded .ply splat or mesh file. For a backend on another machine."""
        if not re.fullmatch(r"[0-9a-f]{8,32}", upload_id) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
            raise HTTPException(422, "upload id must be 8-32 hex digits and the name a plain file name")
        folder = worker.data_dir / "uploads" / upload_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp, size = folder / f".{name}.part", 0
        with open(tmp, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    f.close()
                    tmp.unlink(missing_ok=True)
                    raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD // 2**30} GiB per file")
                f.write(chunk)
        tmp.replace(folder / name)
        return {"folder": str(folder), "file": str(folder / name), "bytes": size}

    @app.get("/v1/jobs")
    def list_jobs() -> list[dict]:
        return [j.to_json() for j in store.list()]

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        return job_or_404(job_id).to_json()

    @app.get("/v1/jobs/{job_id}/events")
    def events(job_id: str, timeout: float = 3600.0) -> StreamingResponse:
        """Server-sent events: the job (JSON) each time it changes, until it finishes."""
        job_or_404(job_id)

        def stream() -> Iterator[str]:
            last, deadline = None, time.monotonic() + min(max(timeout, 0.0), 3600.0)
            while time.monotonic() < deadline:
                job = store.get(job_id)
                if job is None:
                    return
                if job.updated != last:
                    last = job.updated
                    yield f"data: {json.dumps(job.to_json())}\n\n"
                if job.state in FINISHED or job.state == "interrupted":
                    return
                time.sleep(0.2)
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
        store.update(job_id, state="queued", stage="", progress=0.0, error=None)
        worker.submit(job_id)
        return store.get(job_id).to_json()

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
