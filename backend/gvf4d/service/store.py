"""The job store: SQLite in WAL mode, one row per job. Survives a killed backend: on start, jobs that were
running are marked interrupted (and can be resumed)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled")

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
    timings TEXT NOT NULL DEFAULT '{}'
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

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "updated": self.updated, "state": self.state,
                "stage": self.stage, "progress": self.progress, "request": self.request, "result": self.result,
                "error": self.error, "reused_stages": self.reused, "timings": self.timings}


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def _row(self, r) -> Job:
        return Job(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], json.loads(r[9]), json.loads(r[10]))

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

    def mark_interrupted(self) -> list[str]:
        """At start-up: running jobs were cut off by the previous process's end."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
            self._db.execute("UPDATE jobs SET state = 'interrupted', updated = ? WHERE state = 'running'", (time.time(),))
        return ids

    def queued(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created").fetchall()]
