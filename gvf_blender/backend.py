"""Talking to the GVF4D backend from Blender: stdlib HTTP only, never blocking the UI for long.

The backend writes a lock file (url, token, pid; mode 0600) into its data folder; `find_backend` reads it, or
the URL and token set in the preferences are used (a GPU box on the studio network).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

LOCK_NAME = "backend.lock.json"


class BackendError(RuntimeError):
    pass


def default_data_dir() -> Path:
    return Path(os.environ.get("GVF4D_HOME", Path.home() / ".local" / "share" / "gvf4d"))


class Backend:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method: str, path: str, body=None, raw: bool = False):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data = r.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                detail = json.loads(text).get("detail", text)
            except (json.JSONDecodeError, AttributeError):
                detail = text
            if isinstance(detail, list):   # validation errors: "field: message" lines
                detail = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
            raise BackendError(f"the backend refused the request ({e.code}): {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BackendError(f"cannot reach the GVF4D backend at {self.url}: {getattr(e, 'reason', e)}. "
                               "Start it with `gvf4d serve` or check the add-on preferences") from None
        return data if raw else json.loads(data)

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def submit(self, request: dict) -> dict:
        return self._call("POST", "/v1/jobs", request)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        data = self._call("GET", f"/v1/jobs/{job_id}/files/{name}", raw=True)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest


def find_backend(url: str = "", token: str = "", data_dir: str = "") -> Backend:
    """Preferences' URL + token when both are set, else the lock file of a running local backend."""
    if url and token:
        return Backend(url, token)
    lock = Path(data_dir or default_data_dir()) / LOCK_NAME
    if not lock.is_file():
        raise BackendError(f"no running GVF4D backend found ({lock} is missing): start one with `gvf4d serve`, "
                           "or set its URL and token in the add-on preferences")
    try:
        info = json.loads(lock.read_text())
        return Backend(info["url"], info["token"])
    except (json.JSONDecodeError, KeyError) as e:
        raise BackendError(f"{lock}: unreadable lock file ({e})") from None


def start_backend(python: str, data_dir: str = "", timeout: float = 60.0) -> Backend:
    """Starts `gvf4d serve` with the backend environment's interpreter (detached: it outlives this Blender
    session's operator, and keeps its models loaded between jobs) and waits for its lock file."""
    import subprocess
    import time
    folder = Path(data_dir or default_data_dir())
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    lock.unlink(missing_ok=True)
    log = open(folder / "backend.log", "ab")
    try:
        proc = subprocess.Popen([python, "-m", "gvf4d.cli", "serve", "--data", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise BackendError(f"cannot start the backend with {python}: {e}") from None
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BackendError(f"the backend exited at start (code {proc.returncode}); see {folder / 'backend.log'}")
        if lock.is_file():
            try:
                backend = find_backend(data_dir=str(folder))
                backend.health()
                return backend
            except BackendError:
                pass
        time.sleep(0.2)
    raise BackendError(f"the backend did not answer within {timeout:.0f} s; see {folder / 'backend.log'}")
