"""Talking to the GVF4D backend from Blender: stdlib HTTP only, each call short, so the UI never waits long.

A local backend is found through its data folder's lock file (`lockfile.py`); a backend elsewhere (a GPU box on
the studio network) by the URL and token set in the preferences. `handshake` compares the API versions of the
two sides and says which one to update.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import lockfile

API_VERSION = 1                # the /v1/health `api_version` this add-on speaks
NO_BACKEND = "no backend running — Start it in the GVF4D panel"


class BackendError(RuntimeError):
    """A refusal of the backend or a failure to reach it, in words the panel shows. status: the HTTP status of a
    refusal, None when no answer came."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NoBackend(BackendError):
    """No backend serves the data folder: none was started, or the last one was stopped or killed."""


class BackendStarting(BackendError):
    """A backend holds the data folder but has not written its address yet."""


class Backend:
    """One backend's HTTP API. data_dir and lock: the data folder and lock file it was found through (None for a
    backend set by URL), so a failure to reach it can tell "it stopped" from "the network failed"."""

    def __init__(self, url: str, token: str, data_dir: Path | None = None, lock: dict | None = None,
                 timeout: float = 10.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.data_dir, self.lock = data_dir, lock

    @property
    def is_local(self) -> bool:
        return self.data_dir is not None

    def _request(self, method: str, path: str, data=None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, method=method, data=data,
                                     headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            if e.code == 503:
                try:
                    body = json.loads(text)
                except json.JSONDecodeError:
                    body = None
                if isinstance(body, dict) and body.get("status") == "degraded":
                    return body            # /v1/health of a backend whose worker died: the caller shows it
            if e.code == 401 and self.is_local:
                raise self._stopped(token_refused=True) or BackendError(
                    f"the backend at {self.url} does not take the token of its lock file "
                    f"({self.data_dir / lockfile.INFO_NAME}): it may be restarting; try again", 401) from None
            try:
                detail = json.loads(text).get("detail", text)
            except (json.JSONDecodeError, AttributeError):
                detail = text
            raise BackendError(f"the backend refused the request ({e.code}): {detail}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            if self.is_local:
                raise self._stopped() or BackendError(
                    f"the backend at {self.url} does not answer ({getattr(e, 'reason', e)}); it holds its data "
                    f"folder, so it may be busy starting or stopping: try again, or see its log", None) from None
            raise BackendError(f"cannot reach the GVF4D backend at {self.url}: {getattr(e, 'reason', e)}; "
                               "check the URL and token in the add-on preferences") from None

    def _stopped(self, token_refused: bool = False) -> NoBackend | None:
        """NoBackend when the local backend this was found through is gone: its lock file is then removed as
        stale (nobody holds its OS lock; where that cannot be checked, its pid is gone or its port answered with
        another token)."""
        if lockfile.live_backend(self.data_dir) is None or (
                token_refused and lockfile.remove_stale(self.data_dir, self.lock)):
            return NoBackend(f"{NO_BACKEND} (the backend of {self.data_dir} stopped)")
        return None

    def _call(self, method: str, path: str, body=None):
        answer = self._request(method, path, None if body is None else json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
        if isinstance(answer, dict):
            return answer
        with answer as r:
            data = r.read()
        return json.loads(data) if data else None

    def health(self) -> dict:
        """/v1/health (docs/design.md §3); a degraded backend's answer (503) is returned too."""
        return self._call("GET", "/v1/health")

    def submit(self, request: dict) -> dict:
        return self._call("POST", "/v1/jobs", request)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def unload_models(self) -> dict:
        """Drops the networks the backend keeps loaded between jobs, freeing their GPU memory."""
        return self._call("POST", "/v1/models/unload")

    def upload(self, path: Path, upload_id: str) -> str:
        """Sends a file to the backend (PUT /v1/uploads); returns its path on the backend's machine."""
        path = Path(path)
        with open(path, "rb") as f:
            answer = self._request("PUT", f"/v1/uploads/{upload_id}/{urllib.parse.quote(path.name)}", f,
                                   {"Content-Type": "application/octet-stream",
                                    "Content-Length": str(path.stat().st_size)})
            with answer as r:
                return json.loads(r.read())["file"]

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        """Streams a job's file to dest (through a temporary file beside it, renamed once complete)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._request("GET", f"/v1/jobs/{job_id}/files/{name}") as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def handshake(health: dict) -> None:
    """Raises BackendError naming the side to update when the backend's API version is not this add-on's."""
    theirs = health.get("api_version")
    if theirs == API_VERSION:
        return
    version = health.get("version", "?")
    if not isinstance(theirs, int) or theirs < API_VERSION:
        raise BackendError(f"the backend (gvf4d {version}) speaks API version {theirs or 0}, this add-on "
                           f"{API_VERSION}: update the backend (`tools/install.sh`, or `pip install -U gvf4d` in its "
                           "environment) and restart it")
    raise BackendError(f"the backend (gvf4d {version}) speaks API version {theirs}, this add-on {API_VERSION}: "
                       "update the GVF4D add-on (Preferences > Get Extensions)")


def find_backend(url: str = "", token: str = "", data_dir: str = "") -> Backend:
    """The backend set in the preferences (URL + token), else the one whose lock file is in the data folder.
    NoBackend when none serves the folder (a stale lock file is removed first)."""
    if url and token:
        return Backend(url, token)
    folder = Path(data_dir) if data_dir else lockfile.default_data_dir()
    info = lockfile.live_backend(folder)
    if info is None:
        raise NoBackend(f"{NO_BACKEND} (no backend serves {folder})")
    if info.get("starting"):
        raise BackendStarting(f"the backend of {folder} is starting; try again in a moment")
    try:
        return Backend(info["url"], info["token"], folder, info)
    except KeyError as e:
        raise BackendError(f"{folder / lockfile.INFO_NAME}: the lock file lacks {e}") from None
