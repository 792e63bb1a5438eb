"""`gvf4d serve`: the token, the lock file, the worker and uvicorn."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import sys
from pathlib import Path

LOCK_NAME = "backend.lock.json"


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


def write_lock(data_dir: Path, info: dict) -> Path:
    """The lock file (mode 0600) tells clients (the add-on, `gvf4d submit`) where the backend is and its token."""
    path = data_dir / LOCK_NAME
    tmp = data_dir / f".{LOCK_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)
    return path


def read_lock(data_dir: Path) -> dict:
    path = Path(data_dir) / LOCK_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no running backend found (start one with `gvf4d serve`)")
    return json.loads(path.read_text())


def serve(host: str = "127.0.0.1", port: int = 0, data_dir: Path | None = None, allow_remote: bool = False,
          weights: Path | None = None) -> None:
    import uvicorn

    from .app import create_app
    from .store import JobStore
    from .worker import Worker

    if not _is_loopback(host):
        if not allow_remote:
            raise ValueError(f"binding to {host} exposes the backend to the network; pass --allow-remote to do so")
        print(f"gvf4d: WARNING: serving on {host}, reachable from other machines; the token is the only guard",
              file=sys.stderr)
    data_dir = Path(data_dir or default_data_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port(host)
    token = secrets.token_urlsafe(32)
    store = JobStore(data_dir / "jobs.sqlite")
    interrupted = store.mark_interrupted()
    if interrupted:
        print(f"gvf4d: {len(interrupted)} job(s) were interrupted by the last shutdown: {', '.join(interrupted)} "
              "(POST /v1/jobs/ID/resume to run them again)", file=sys.stderr)
    worker = Worker(store, data_dir)
    shown = f"[{host}]" if ":" in host else host
    hosts = {f"{shown}:{port}"} | ({f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"} if _is_loopback(host) else set())
    app = create_app(store, worker, token, hosts, weights=Path(weights).resolve() if weights else None)
    url = f"http://{shown}:{port}"
    lock = write_lock(data_dir, {"url": url, "host": host, "port": port, "pid": os.getpid(), "token": token})
    worker.start()
    print(f"gvf4d: serving {url} (lock file {lock})", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        worker.stop()
        try:
            if read_lock(data_dir).get("pid") == os.getpid():
                lock.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass
