"""Bounded retention of the data folder's `uploads/` and `cache/`: entries older than a maximum age are removed,
then the oldest until the rest fit in a maximum size. Entries in use (an upload a queued job reads) and entries
written in the last hour are kept.

In the service's folders a hidden name (starting with '.') is always a temporary: atomic_output's temp files,
the stage cache's folders being written, uploads being received. `remove_temporaries` clears the ones a killed
process left behind.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

GRACE_S = 3600.0      # entries and temporaries younger than this are never removed by size or as leftovers


@dataclass(frozen=True)
class RetentionPolicy:
    max_age_s: float
    max_bytes: int

    @classmethod
    def from_days_and_gib(cls, days: float, gib: float) -> "RetentionPolicy":
        return cls(max_age_s=days * 86400.0, max_bytes=int(gib * 2**30))


UPLOADS_RETENTION = RetentionPolicy.from_days_and_gib(7, 50)    # uploads/<id>/: footage sent by remote clients
CACHE_RETENTION = RetentionPolicy.from_days_and_gib(30, 20)     # cache/<stage>/<key>/: the per-shot stage cache


@dataclass
class Entry:
    path: Path
    size: int           # bytes of every file in it
    mtime: float        # its newest modification


def _measure(path: Path) -> Entry:
    size, newest = 0, path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                size, newest = size + st.st_size, max(newest, st.st_mtime)
    else:
        size = path.lstat().st_size
    return Entry(path, size, newest)


def entries(folder: Path, depth: int) -> list[Entry]:
    """The non-hidden entries `depth` levels below folder (uploads: 1, cache: 2), oldest first."""
    level = [Path(folder)] if Path(folder).is_dir() else []
    for _ in range(depth):
        level = [p for d in level if d.is_dir() and not d.is_symlink() for p in d.iterdir()
                 if not p.name.startswith(".")]
    return sorted((_measure(p) for p in level), key=lambda e: e.mtime)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune(folder: Path, depth: int, policy: RetentionPolicy, keep: Iterable[Path] = (),
          now: Optional[float] = None) -> list[Path]:
    """Removes the entries of folder past the policy's age, then the oldest until the rest fit in its size;
    returns what was removed. Entries in `keep` and entries written within GRACE_S are kept."""
    now = time.time() if now is None else now
    keep = {Path(p) for p in keep}
    kept, removed = [], []
    for e in entries(folder, depth):
        if e.path not in keep and now - e.mtime > policy.max_age_s:
            _remove(e.path)
            removed.append(e.path)
        else:
            kept.append(e)
    total = sum(e.size for e in kept)
    for e in kept:                     # oldest first
        if total <= policy.max_bytes:
            break
        if e.path in keep or now - e.mtime < GRACE_S:
            continue
        _remove(e.path)
        removed.append(e.path)
        total -= e.size
    return removed


def remove_temporaries(folder: Path, min_age_s: float = 0.0, now: Optional[float] = None) -> list[Path]:
    """Removes the hidden files and folders under folder (temporaries) last modified more than min_age_s ago."""
    now = time.time() if now is None else now
    removed = []
    if not Path(folder).is_dir():
        return removed
    for root, dirs, files in os.walk(folder):
        for name in [d for d in dirs if d.startswith(".")] + [f for f in files if f.startswith(".")]:
            path = Path(root) / name
            try:
                age = now - path.lstat().st_mtime
            except OSError:
                continue
            if age >= min_age_s:
                _remove(path)
                removed.append(path)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return removed
