"""One backend per data folder (docs/design.md §3): an exclusive OS lock on `DATA/backend.lock`, held for the
backend's whole life, and the backend's address and token beside it in `DATA/backend.lock.json` (mode 0600).

The OS lock is `fcntl.flock` on POSIX and `msvcrt.locking` on Windows; it goes with its process, so a killed
backend leaves no live lock and its JSON file is known stale. On a platform with neither, the lock is not
enforced (docs/security.md). The lock file itself is never deleted: unlinking a lock file lets two processes
lock two different files of one name.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Optional

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
OS_LOCK_AVAILABLE = fcntl is not None or msvcrt is not None


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if msvcrt is not None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class DataFolderLock:
    """The exclusive lock on a data folder. `acquire()` does not wait: it says whether this process now holds it."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        if _try_lock(fd):
            self._fd = fd
            return True
        os.close(fd)
        return False

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                _unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> "DataFolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_held(data_dir: Path) -> bool:
    """Whether some process holds the folder's lock (tried without waiting, and let go at once). Without an OS lock
    on this platform: whether the lock's JSON exists."""
    if not OS_LOCK_AVAILABLE:
        return (Path(data_dir) / INFO_NAME).exists()
    try:
        fd = os.open(Path(data_dir) / LOCK_NAME, (os.O_RDONLY if fcntl is not None else os.O_RDWR)
                     | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    except OSError:
        return True                    # unreadable (another user's folder): assume a live backend
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


def write_info(data_dir: Path, info: dict) -> Path:
    """Writes the lock's JSON (mode 0600) through a unique temp file opened with O_EXCL | O_NOFOLLOW (a file or
    symlink planted under a predictable name is never written through), then renames it into place."""
    path = Path(data_dir) / INFO_NAME
    tmp = path.with_name(f".{INFO_NAME}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_info(data_dir: Path) -> Optional[dict]:
    """The lock's JSON, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads((Path(data_dir) / INFO_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def remove_info(data_dir: Path) -> None:
    """Removes the lock's JSON; only a process that holds the lock (or just found it free) may call this."""
    (Path(data_dir) / INFO_NAME).unlink(missing_ok=True)
