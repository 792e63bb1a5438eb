"""Atomic file output: write to a temp file beside the target, then rename over it."""
from __future__ import annotations

import contextlib
import glob
import os
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _running(pid: int) -> bool:
    """Whether a process with this id runs (on Windows, where signal 0 would not be a probe: assumed so)."""
    if os.name == "nt" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                  # another user's process
        return True
    return True


# temp files name their writer, host and process, so that only this host's dead writers' files are removed (a
# folder may be shared with other machines: a Ray cluster's --shared, a network drive)
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _temp_prefix(path: Path) -> str:
    """'.<name, cut to 100 bytes so a long name still fits 255>.'"""
    return f".{os.fsencode(path.name)[:100].decode(errors='ignore')}."


def remove_stale_temps(path: Path) -> None:
    """Removes the temp files a killed writer of `path` on this host left beside it (named after a process that
    no longer runs); a live writer's, and other hosts', are kept."""
    prefix = _temp_prefix(path) + _HOST + "-"
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp*"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temp path in path's folder (named after `path`, this host and process); on success it is renamed
    to `path` (mode 0666 & ~umask), on failure it is removed and `path` is left as it was. Temp files of `path`
    that a killed run on this host left are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{_HOST}-{os.getpid()}.", suffix=f".tmp{suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
