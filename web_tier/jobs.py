"""Durable job store: every request and its result, in SQLite under ``settings.data_dir``.

Results must survive a web-tier restart (a result that arrives while no request
waits is still retrievable through ``GET /api/jobs/<id>``), so they go to disk,
not to a dict. One connection guarded by a lock keeps it simple; WAL mode lets
the dashboard read while the dispatcher writes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from infra.messages import ImageResult

log = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key TEXT,
    version TEXT,
    status TEXT NOT NULL,
    label TEXT,
    score REAL,
    error TEXT,
    worker TEXT,
    created_at REAL,
    enqueued_at REAL,
    done_at REAL,
    result_at REAL,
    infer_ms REAL
);
CREATE INDEX IF NOT EXISTS jobs_result_at ON jobs (result_at);
"""


class JobStatus(StrEnum):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    status: JobStatus
    key: str | None = None
    version: str | None = None
    label: str | None = None
    score: float | None = None
    error: str | None = None
    worker: str | None = None
    created_at: float | None = None  # the web tier began handling the upload
    enqueued_at: float | None = None  # the image was stored and its request message was being sent
    done_at: float | None = None  # the worker finished
    result_at: float | None = None  # the dispatcher received the result
    infer_ms: float | None = None  # the worker's own inference time

    @property
    def total_ms(self) -> float | None:
        if self.created_at is None or self.result_at is None:
            return None
        return round((self.result_at - self.created_at) * 1000, 1)

    @property
    def answer(self) -> str | None:
        """The course-format body, once there is a result."""
        if self.status is JobStatus.QUEUED:
            return None
        return ImageResult(self.id, self.name, self.label, self.score, self.error).answer

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        data["total_ms"] = self.total_ms
        data["answer"] = self.answer
        return data


class JobStore:
    """SQLite-backed jobs; safe to share between threads."""

    def __init__(self, data_dir: str | Path):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        log.info("job store at %s", self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, job_id: str, name: str, key: str, version: str | None, created_at: float,
            enqueued_at: float) -> None:
        """Recorded just before the request is sent, so a result can never precede its job."""
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, name, key, version, status, created_at, enqueued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, key, version, JobStatus.QUEUED.value, created_at, enqueued_at),
            )

    def fail(self, job_id: str, error: str) -> None:
        """A job that never reached a worker (e.g. the queue refused it)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, error = ?, result_at = ? WHERE id = ?",
                (JobStatus.FAILED.value, error, time.time(), job_id),
            )

    def complete(self, result: ImageResult, received_at: float) -> None:
        """Record a worker's result; inserts the job if this store never saw it (e.g. data dir lost)."""
        status = JobStatus.DONE if result.ok else JobStatus.FAILED
        score = None if result.score is None else float(result.score)
        with self._lock:
            self._db.execute(
                """INSERT INTO jobs (id, name, status, label, score, error, worker, enqueued_at, done_at,
                                     result_at, infer_ms)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET status = excluded.status, label = excluded.label,
                       score = excluded.score, error = excluded.error, worker = excluded.worker,
                       done_at = excluded.done_at, result_at = excluded.result_at, infer_ms = excluded.infer_ms""",
                (result.request_id, result.name, status.value, result.label, score, result.error, result.worker,
                 result.sent_at, result.done_at, received_at, result.infer_ms),
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids).fetchall()
        return {row["id"]: _job(row) for row in rows}

    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, zero when none): what the dashboard shows."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = {s.value: 0 for s in JobStatus}
        out.update({status: n for status, n in rows})
        return out

    def recent(self, limit: int = 50) -> list[Job]:
        """The latest finished jobs, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE result_at IS NOT NULL ORDER BY result_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_job(r) for r in rows]


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["status"] = JobStatus(data["status"])
    return Job(**data)
