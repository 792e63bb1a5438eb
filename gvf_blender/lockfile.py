"""The backend's data-folder lock as the add-on reads it (docs/design.md §3), with the standard library alone.

`gvf4d serve` holds an exclusive OS lock on `DATA/backend.lock` for its whole life and writes its address, token
and pid to `DATA/backend.lock.json`. A JSON file whose OS lock nobody holds is stale (its backend was killed): the
add-on removes it only while it holds that lock itself, so a live backend's file is never deleted. Where the OS
lock cannot be checked (no `backend.lock`, or a platform with neither `fcntl` nor `msvcrt`) the JSON's pid
decides. This mirrors `gvf4d.service.lock`, which Blender's Python cannot import.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:                    # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:                    # POSIX
    msvcrt = None

LOCK_NAME = "backend.lock"
INFO_NAME = "backend.lock.json"
LOG_NAME = "backend.log"


def default_data_dir() -> Path:
    """The backend's default data folder (the same rule as `gvf4d serve`)."""
    return Path(os.environ.get("GVF4D_HOME", Path.home() / ".local" / "share" / "gvf4d"))


def pid_alive(pid) -> bool:
    """Whether a process with this id runs on this machine: `os.kill(pid, 0)` on POSIX, OpenProcess and its exit
    code on Windows (where signal 0 would terminate the process)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":
        import ctypes
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)         # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5                   # ERROR_ACCESS_DENIED: it exists, not ours
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # another user's process
        return True
    return True


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def read_info(data_dir: Path) -> dict | None:
    """The lock file's JSON (url, token, pid, ...), None when there is none or it is unreadable."""
    try:
        info = json.loads((Path(data_dir) / INFO_NAME).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def remove_stale(data_dir: Path, seen: dict | None = None) -> bool:
    """Removes the lock's JSON when no backend holds the folder's OS lock, checked and done while holding that
    lock; True when it was removed. Where the OS lock cannot be checked, the JSON is removed when it is still
    `seen`, the content the caller found stale (its pid gone, or its port answering with another token)."""
    folder = Path(data_dir)
    if lock_held(folder) is None:
        if seen is not None and read_info(folder) == seen:
            (folder / INFO_NAME).unlink(missing_ok=True)
            return True
        return False
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False                   # not ours to clean (another user's folder)
    try:
        if not _try_lock(fd):
            return False
        try:
            if not (folder / INFO_NAME).exists():
                return False
            (folder / INFO_NAME).unlink()
            return True
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def lock_held(data_dir: Path) -> bool | None:
    """Whether a backend holds the folder's OS lock (tried without waiting, let go at once); None when this
    cannot be told: no `backend.lock` (a backend older than the lock) or no OS lock on this platform."""
    if fcntl is None and msvcrt is None:
        return None
    try:
        fd = os.open(Path(data_dir) / LOCK_NAME, os.O_RDONLY if fcntl is not None else os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError:
        return True                    # unreadable: assume a live backend rather than report a false "none"
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


def live_backend(data_dir: Path) -> dict | None:
    """The lock file of the backend serving data_dir, or None when none does (a stale lock file is removed).
    A held lock with no JSON yet is a backend starting: {"starting": True}."""
    folder = Path(data_dir)
    info = read_info(folder)
    held = lock_held(folder)
    if held:
        return info or {"starting": True}
    if info is None:
        return None
    if held is None and pid_alive(info.get("pid")):
        return info
    remove_stale(folder, info)
    return None
