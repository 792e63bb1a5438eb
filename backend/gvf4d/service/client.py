"""A small client of the backend's API (stdlib only), used by `gvf4d submit/status/cancel`."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional


class BackendError(RuntimeError):
    pass


class BackendClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @classmethod
    def from_lock(cls, data_dir: Path) -> "BackendClient":
        from .server import read_lock
        info = read_lock(data_dir)
        return cls(info["url"], info["token"])

    def _request(self, method: str, path: str, body: Optional[dict] = None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data = r.read()
                return json.loads(data) if data and r.headers.get_content_type() == "application/json" else data
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (json.JSONDecodeError, AttributeError):
                pass
            raise BackendError(f"{method} {path}: {e.code} {detail}") from None
        except urllib.error.URLError as e:
            raise BackendError(f"cannot reach the backend at {self.url} ({e.reason})") from None

    def health(self) -> dict:
        return self._request("GET", "/v1/health")

    def submit(self, request: dict) -> dict:
        return self._request("POST", "/v1/jobs", request)

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self._request("GET", "/v1/jobs")

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        data = self._request("GET", f"/v1/jobs/{job_id}/files/{name}")
        dest.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
        return dest

    def follow(self, job_id: str, poll: float = 0.5) -> Iterator[dict]:
        """Yields the job each time it changes until it is finished."""
        last = None
        while True:
            job = self.job(job_id)
            if job["updated"] != last:
                last = job["updated"]
                yield job
            if job["state"] in ("done", "failed", "cancelled", "interrupted"):
                return
            time.sleep(poll)
