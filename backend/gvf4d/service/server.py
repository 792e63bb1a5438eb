"""`gvf4d serve`: the data folder's lock, the token, the worker and uvicorn.

The backend holds the data folder's exclusive lock for its whole life (`lock.py`); a second backend on the same
folder fails at once naming the first. Its files are private: the process's umask is 0077, the data folder 0700.
On exit, SIGTERM and SIGINT it stops the worker (a running job is recorded interrupted) and removes its lock file.
Its log records (the `gvf4d` loggers) are appended to `DATA/backend.log`.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from ..limits import Limits
from .lock import INFO_NAME, DataFolderLock, is_held, read_info, remove_info, write_info
from .ray_cluster import RaySettings
from .retention import CACHE_RETENTION, UPLOADS_RETENTION, RetentionPolicy

LOCK_WAIT_S = 1.0                  # a client may hold the lock for a moment while it checks it
UPLOAD_STALL_S = 60.0              # an upload that sends nothing for this long is refused (408) and removed
LOG_NAME = "backend.log"           # the service's log in its data folder (the add-on opens it)


class DataFolderBusy(RuntimeError):
    """Another backend holds the data folder."""


def default_data_dir() -> Path:
    return Path(os.environ.get("GVF4D_HOME", Path.home() / ".local" / "share" / "gvf4d"))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def running_backend(data_dir: Path) -> Optional[dict]:
    """The lock file of the backend serving data_dir, or None when none is. A lock file nobody holds the lock of
    is stale (its backend was killed): it is removed, under the lock, so a backend starting meanwhile keeps its own."""
    data_dir = Path(data_dir)
    if is_held(data_dir):
        return read_info(data_dir)
    if (data_dir / INFO_NAME).exists():
        lock = DataFolderLock(data_dir)
        try:
            if lock.acquire():
                remove_info(data_dir)
        except OSError:
            pass                       # not ours to clean (another user's folder)
        finally:
            lock.release()
    return None


def read_lock(data_dir: Path) -> dict:
    """The running backend's lock file; FileNotFoundError saying "no backend running" when there is none."""
    info = running_backend(data_dir)
    if info is None:
        raise FileNotFoundError(f"no backend running for the data folder {data_dir} (start one with `gvf4d serve`)")
    return info


def _make_private(data_dir: Path) -> None:
    """umask 0077 for every file this process writes, and the data folder 0700 (on Windows the folder keeps the
    ACL of the user profile it lies in: docs/security.md)."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(data_dir, 0o700)
    except PermissionError:
        print(f"gvf4d: WARNING: cannot make {data_dir} private (not its owner)", file=sys.stderr)


def _take_lock(data_dir: Path) -> DataFolderLock:
    lock = DataFolderLock(data_dir)
    deadline = time.monotonic() + LOCK_WAIT_S
    while not lock.acquire():
        if time.monotonic() > deadline:
            info = read_info(data_dir) or {}
            raise DataFolderBusy(f"another backend (pid {info.get('pid', '?')}, {info.get('url', 'starting')}) "
                                 f"serves the data folder {data_dir}; stop it first or pass another --data folder")
        time.sleep(0.05)
    return lock


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)      # unwinds through serve()'s cleanup, as KeyboardInterrupt does for SIGINT


def serve(host: str = "127.0.0.1", port: int = 0, data_dir: Path | None = None, allow_remote: bool = False,
          weights: Path | None = None, limits: Limits | None = None,
          uploads: RetentionPolicy = UPLOADS_RETENTION, cache: RetentionPolicy = CACHE_RETENTION,
          upload_stall_s: float = UPLOAD_STALL_S, threads: Optional[int] = None,
          ray: Optional[RaySettings] = None) -> None:
    """threads: torch's thread count for every job (each Ray actor's too); ray: dispatch the jobs to Ray actors
    (`ray_workers.py`) instead of the one local worker."""
    if not _is_loopback(host):
        if not allow_remote:
            raise ValueError(f"binding to {host} exposes the backend to the network; pass --allow-remote to do so")
        print(f"gvf4d: WARNING: serving on {host}, reachable from other machines; the token is the only guard",
              file=sys.stderr)
    data_dir = Path(data_dir or default_data_dir())
    _make_private(data_dir)
    # uvicorn handles SIGTERM itself while it runs and raises it again once shut down: then this handler turns it
    # into SystemExit, so the lock file is removed below instead of the process dying with it in place
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    lock = _take_lock(data_dir)
    log_file = logging.FileHandler(data_dir / LOG_NAME, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("gvf4d").addHandler(log_file)
    worker = None
    try:
        import uvicorn                  # after the lock: a refused second backend answers at once

        from .app import create_app
        from .store import JobStore
        from .worker import Worker

        port = port or _free_port(host)
        token = secrets.token_urlsafe(32)
        store = JobStore(data_dir / "jobs.sqlite")
        again, spent = store.requeue_unfinished()
        if again:
            print(f"gvf4d: {len(again)} job(s) cut off by the last shutdown are queued again: {', '.join(again)}",
                  file=sys.stderr)
        if spent:
            print(f"gvf4d: {len(spent)} job(s) were cut off too often and stay interrupted: {', '.join(spent)} "
                  "(POST /v1/jobs/ID/resume to run them again)", file=sys.stderr)
        if threads:
            import torch
            torch.set_num_threads(threads)
        if ray is None:
            worker = Worker(store, data_dir, limits, uploads=uploads, cache=cache)
        else:
            from .ray_cluster import prepare_environment
            prepare_environment(ray, data_dir)       # before Ray is imported: it reads these variables once
            from .ray_workers import RayDispatcher
            worker = RayDispatcher(store, data_dir, ray, limits, uploads=uploads, cache=cache)
        shown = f"[{host}]" if ":" in host else host
        hosts = {f"{shown}:{port}"} | ({f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
                                       if _is_loopback(host) else set())
        app = create_app(store, worker, token, hosts, weights=Path(weights).resolve() if weights else None,
                         upload_stall_s=upload_stall_s)
        url = f"http://{shown}:{port}"
        worker.start()
        info = write_info(data_dir, {"url": url, "host": host, "port": port, "pid": os.getpid(), "token": token,
                                     "python": sys.executable})     # the add-on can start the next one with it
        print(f"gvf4d: serving {url} (lock file {info})", file=sys.stderr, flush=True)
        # open event streams get 3 s to end at shutdown, then they are cut
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        if worker is not None:
            worker.stop()
        remove_info(data_dir)
        lock.release()
        logging.getLogger("gvf4d").removeHandler(log_file)
        log_file.close()
