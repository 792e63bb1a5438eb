"""Starting and stopping a local backend from Blender.

`start` runs `gvf4d serve` on a data folder with the backend environment's interpreter (or its `gvf4d`
executable), detached from Blender's terminal, its output appended to the folder's `backend.log`; the caller
polls `BackendProcess.poll` from a timer until it answers. What this Blender started is stopped when Blender
exits, through its own process handle (never by a name, never another process). A backend already serving the
folder is used, never replaced: its lock file is not touched.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from pathlib import Path

from . import lockfile
from .backend import Backend, BackendError, BackendStarting, NoBackend, find_backend

START_TIMEOUT_S = 180.0        # a cold first import of torch (and CUDA) can take a while
STOP_TIMEOUT_S = 15.0          # a job stops at its next check; the backend then removes its lock file

_started: list["BackendProcess"] = []       # what this Blender session started, stopped at its exit


def serve_command(executable: str, data_dir: Path, weights: str = "") -> list[str]:
    """`gvf4d serve` through what the preferences name: the `gvf4d` executable itself, or the backend
    environment's Python (which runs the `gvf4d.cli` module)."""
    exe = Path(executable)
    base = [str(exe)] if exe.stem.lower() == "gvf4d" else [str(exe), "-m", "gvf4d.cli"]
    return base + ["serve", "--data", str(data_dir)] + (["--weights", weights] if weights else [])


def _log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class BackendProcess:
    """A backend process this Blender session started."""

    def __init__(self, proc: subprocess.Popen, data_dir: Path):
        self.proc, self.data_dir, self.started = proc, Path(data_dir), time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.data_dir / lockfile.LOG_NAME

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def poll(self) -> Backend | None:
        """The backend once it answers; None while it starts. BackendError when it exited or did not answer in
        time (with the last lines of its log)."""
        if self.proc.poll() is not None:
            raise BackendError(f"the backend exited at start (code {self.proc.returncode}): "
                               f"{_log_tail(self.log)} (log: {self.log})")
        try:
            backend = find_backend(data_dir=str(self.data_dir))
            backend.health()
            return backend
        except (NoBackend, BackendStarting):
            pass
        except BackendError:
            pass                        # its lock file is written a moment before uvicorn answers
        if time.monotonic() - self.started > START_TIMEOUT_S:
            raise BackendError(f"the backend did not answer within {START_TIMEOUT_S:.0f} s (log: {self.log})")
        return None

    def wait(self, timeout: float = START_TIMEOUT_S, interval: float = 0.2) -> Backend:
        """Blocks until the backend answers (for scripts; the add-on polls from a timer instead)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backend = self.poll()
            if backend is not None:
                return backend
            time.sleep(interval)
        raise BackendError(f"the backend did not answer within {timeout:.0f} s (log: {self.log})")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ends the process: SIGTERM first (a running job is recorded interrupted, the lock file removed), then
        a kill after timeout. On Windows both end it at once; its lock file is then stale, and the next client
        removes it (the OS lock went with the process)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def started(data_dir: Path) -> BackendProcess | None:
    """The backend this Blender session started on data_dir, while it runs."""
    return next((p for p in _started if p.data_dir == Path(data_dir) and p.running), None)


def start(executable: str, data_dir: Path, weights: str = "") -> BackendProcess:
    """Starts `gvf4d serve` on data_dir (returning at once; poll the process). BackendError when a backend
    already serves the folder (it is used, not replaced) or the executable cannot be run."""
    data_dir = Path(data_dir)
    own = started(data_dir)
    if own is not None:
        return own
    live = lockfile.live_backend(data_dir)
    if live is not None:
        raise BackendError(f"a backend already serves {data_dir} (pid {live.get('pid', '?')}, "
                           f"{live.get('url', 'starting')})")
    if not executable or not Path(executable).is_file():
        raise BackendError(f"cannot start the backend with {executable or 'nothing'}: set the backend's Python "
                           "(or its gvf4d executable) in the GVF4D preferences")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Blender's own Python settings must not leak into the backend's interpreter
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
              if os.name == "nt" else {"start_new_session": True})
    log_fd = os.open(data_dir / lockfile.LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)   # private
    with open(log_fd, "ab") as log:
        try:
            proc = subprocess.Popen(serve_command(executable, data_dir, weights), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, **detach)
        except OSError as e:
            raise BackendError(f"cannot start the backend with {executable}: {e}") from None
    if not _started:
        atexit.register(stop_started)
    _started.append(BackendProcess(proc, data_dir))
    return _started[-1]


def stop_started() -> None:
    """Stops the backends this Blender session started that still run (at Blender's exit)."""
    for process in _started:
        process.stop()


def stop(data_dir: Path, timeout: float = STOP_TIMEOUT_S) -> int:
    """Stops the local backend of data_dir: the one this session started through its handle, else the one its
    live lock file names, by that pid (SIGTERM). Returns the pid; NoBackend when none serves the folder."""
    data_dir = Path(data_dir)
    own = started(data_dir)
    if own is not None:
        own.stop(timeout)
        return own.pid
    info = lockfile.live_backend(data_dir)
    pid = (info or {}).get("pid")
    if not lockfile.pid_alive(pid):
        raise NoBackend(f"no backend running for {data_dir}")
    os.kill(pid, signal.SIGTERM)       # Windows: TerminateProcess
    deadline = time.monotonic() + timeout
    while lockfile.lock_held(data_dir) is not False and lockfile.pid_alive(pid):
        if time.monotonic() > deadline:
            raise BackendError(f"the backend (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.1)
    return pid
