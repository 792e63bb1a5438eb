"""The backend this Blender session works with: the one the preferences name, checked once by the API handshake,
started here when none runs, and its last health answer, which the panel draws (drawing never waits on the
network)."""
from __future__ import annotations

import ipaddress
import time
import urllib.parse
from pathlib import Path

import bpy

from . import lifecycle, lockfile
from .backend import Backend, BackendError, find_backend, handshake
from .preferences import addon_preferences

_verified: set[tuple[str, str]] = set()    # (url, token) of backends whose API version matched
# the last /v1/health answer and the message to show (no backend, a refusal), for the panel
health: dict = {"answer": None, "message": "", "time": 0.0}


def data_dir(context) -> Path:
    """The local backend's data folder: the preferences' one, else the backend's default."""
    prefs = addon_preferences(context)
    return Path(bpy.path.abspath(prefs.data_dir)) if prefs and prefs.data_dir else lockfile.default_data_dir()


def executable(context) -> str:
    """What starts a local backend (the preferences' Backend Python), '' when not set."""
    prefs = addon_preferences(context)
    return bpy.path.abspath(prefs.python) if prefs and prefs.python else ""


def is_remote(backend: Backend) -> bool:
    """Whether the backend runs on another machine (its paths are not this machine's: inputs are uploaded)."""
    if backend.is_local:
        return False
    host = urllib.parse.urlsplit(backend.url).hostname or ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def _record(answer: dict | None, message: str = "") -> None:
    health.update(answer=answer, message=message, time=time.time())


def connect(context) -> Backend:
    """The backend to talk to, its API version checked at the first contact. NoBackend when no local backend
    runs; BackendError when it cannot be reached or its API version differs (the message says which side to
    update). A running backend's lock file fills in an empty Backend Python preference."""
    prefs = addon_preferences(context)
    try:
        backend = find_backend(prefs.backend_url, prefs.token, str(data_dir(context))) if prefs else \
            find_backend()
        if (backend.url, backend.token) not in _verified:
            answer = backend.health()
            _record(answer)
            handshake(answer)
            _verified.add((backend.url, backend.token))
    except BackendError as e:
        _record(None if e.status is None else health["answer"], str(e))
        raise
    python = (backend.lock or {}).get("python")
    if prefs is not None and not prefs.python and python:
        prefs.python = python
    return backend


def refresh(context) -> dict | None:
    """Asks the backend for its health (GPU, free memory, loaded models) for the panel; never raises."""
    try:
        answer = connect(context).health()
    except BackendError:
        return None                    # connect recorded the message
    _record(answer, "backend degraded: no worker is alive (see its log)" if answer.get("status") == "degraded" else "")
    return answer


def start(context, weights: str = "") -> lifecycle.BackendProcess:
    """Starts a local backend on the preferences' data folder (returns at once; poll the process)."""
    process = lifecycle.start(executable(context), data_dir(context), weights)
    _record(None, f"starting the backend (pid {process.pid})")
    return process
