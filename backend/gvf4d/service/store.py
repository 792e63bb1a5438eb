"""The job store: SQLite in WAL mode, one row per job. Survives a killed backend: on start, jobs that were
running (killed, or stopped mid-run) are queued again while they have attempts left, else marked interrupted (and
can be resumed); a job's `attempts` counts its starts, in both the local and the --ray service."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 3     # starts of one job (its worker lost, the backend killed) before it stays interrupted or failed

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    reused TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass
class Job:
    id: str
    created: float
    updated: float
    state: str
    stage: str
    progress: float
    request: dict
    result: Optional[str]
    error: Optional[str]
    reused: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "updated": self.updated, "state": self.state,
                "stage": self.stage, "progress": self.progress, "request": self.request, "result": self.result,
                "error": self.error, "reused_stages": self.reused, "timings": self.timings, "attempts": self.attempts}


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        if "attempts" not in {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}:   # a store before it
            self._db.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        for suffix in ("", "-wal", "-shm"):       # private even when an older version created them 0644
            db_file = self.path.with_name(self.path.name + suffix)
            if db_file.exists():
                os.chmod(db_file, 0o600)

    def _row(self, r) -> Job:
        return Job(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], json.loads(r[9]), json.loads(r[10]),
                   r[11])

    def create(self, request: dict) -> Job:
        now = time.time()
        job_id = uuid.uuid4().hex[:16]
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, created, updated, state, request) VALUES (?, ?, ?, 'queued', ?)",
                             (job_id, now, now, json.dumps(request)))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            r = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(r) if r else None

    def list(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created").fetchall()
        return [self._row(r) for r in rows]

    def update(self, job_id: str, **fields) -> None:
        cols = {k: (json.dumps(v) if k in ("reused", "timings") else v) for k, v in fields.items()}
        cols["updated"] = time.time()
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                             (*cols.values(), job_id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def start(self, job_id: str) -> bool:
        """Claims a queued job for a worker: running, one more attempt. False when it is no longer queued."""
        with self._lock:
            claimed = self._db.execute("UPDATE jobs SET state = 'running', stage = 'starting', progress = 0, "
                                       "attempts = attempts + 1, updated = ? WHERE id = ? AND state = 'queued'",
                                       (time.time(), job_id)).rowcount
        return claimed == 1

    def requeue_unfinished(self, max_attempts: int = MAX_ATTEMPTS) -> tuple[list[str], list[str]]:
        """At start-up: the jobs the previous process's end cut off (running when it was killed, interrupted when
        it stopped) are queued again while they have attempts left; the rest are (left) interrupted with an error
        saying why. -> (queued again, interrupted)."""
        now = time.time()
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE state IN ('running', 'interrupted') "
                                    "ORDER BY created").fetchall()
            again = [job_id for job_id, attempts in rows if attempts < max_attempts]
            spent = [job_id for job_id, attempts in rows if attempts >= max_attempts]
            for job_id in again:
                self._db.execute("UPDATE jobs SET state = 'queued', stage = '', progress = 0, updated = ? "
                                 "WHERE id = ?", (now, job_id))
            for job_id in spent:
                self._db.execute("UPDATE jobs SET state = 'interrupted', error = ?, updated = ? WHERE id = ?",
                                 (f"started {max_attempts} times and cut off each time (the backend or its worker "
                                  "stopped); resume it to try again", now, job_id))
        return again, spent

    def queued(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created").fetchall()]
