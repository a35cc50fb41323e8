"""Batches users can take home: ``GET /api/batches/<id>`` (progress and results) and ``<id>.csv``.

A batch is every job submitted with the same batch id (one ``POST /api/jobs`` with
many files, or the page's uploads one by one with ``?batch=<id>``: a batch stays open).
Its progress comes from the batch's counters, read with ConsistentRead and moved in the
same transaction as each job (``infra/jobstore.py``); its jobs from one query on the
job store's batch index, which AWS documents as eventually consistent: a job just
submitted may be missing there and a status behind. So "finished" needs both the
counters (every submitted job done or failed) and the listing (every job there); jobs
listed as queued are re-read from the table. Any web process answers for any batch.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify

from infra.jobstore import BatchCounts, Job, JobStatus
from web_tier.api import BATCH_ID_RE, batch_links, store_answers
from web_tier.intake import Rejected
from web_tier.upload import state

bp = Blueprint("batches", __name__)

CSV_COLUMNS = ("name", "label", "score", "status", "error")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def counts(jobs: list[Job]) -> dict[str, int]:
    out = {s.value: 0 for s in JobStatus}
    for job in jobs:
        out[job.status.value] += 1
    return out


def csv_cell(value) -> str:
    """One CSV cell; user text that a spreadsheet would run as a formula gets a leading quote (OWASP)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(jobs: list[Job]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for job in jobs:
        row = job.to_dict()
        writer.writerow([csv_cell(row[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


@dataclass(frozen=True)
class BatchView:
    jobs: list[Job]
    counts: dict[str, int]
    total: int
    finished: bool


def view(counters: BatchCounts | None, jobs: list[Job]) -> BatchView:
    """Progress from the counters, jobs from the (lagging) index; a batch from before the counters
    existed is read from its jobs alone (pure)."""
    if counters is None:
        n = counts(jobs)
        return BatchView(jobs, n, len(jobs), bool(jobs) and n[JobStatus.QUEUED.value] == 0)
    complete = len(jobs) >= counters.submitted
    return BatchView(jobs, counters.as_dict(), counters.submitted, counters.finished and complete)


INDEX_WAIT_S = 3.0  # how long a read waits for the batch index to list every submitted job (AWS: about 1 s)


def _batch(batch_id: str) -> BatchView:
    if not BATCH_ID_RE.match(batch_id):
        raise Rejected(404, "unknown batch id")
    store = state().store
    with store_answers(f"reading batch {batch_id}"):
        counters = store.batch_counts(batch_id)
        listed = store.batch(batch_id)
        deadline, pause = time.monotonic() + INDEX_WAIT_S, 0.1
        while counters is not None and len(listed) < counters.submitted and time.monotonic() < deadline:
            time.sleep(pause)  # the index catches up with the last submissions
            pause = min(pause * 2, 1.0)
            listed = store.batch(batch_id)
        jobs = store.refresh(listed)
    if counters is None and not jobs:
        raise Rejected(404, "unknown batch id")
    return view(counters, jobs)


@bp.get("/api/batches/<batch_id>.csv")
def batch_csv(batch_id: str):
    got = _batch(batch_id)
    if len(got.jobs) < got.total:  # the index has not caught up with the last submissions yet
        raise Rejected(503, f"batch index is catching up ({len(got.jobs)} of {got.total} jobs listed), try again",
                       retry_after=1)
    return Response(csv_text(got.jobs), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="imgrec-batch-{batch_id}.csv"', "Cache-Control": "no-store"})


@bp.get("/api/batches/<batch_id>")
def batch(batch_id: str):
    got = _batch(batch_id)
    return jsonify(batch=batch_links(batch_id), total=got.total, listed=len(got.jobs), counts=got.counts,
                   finished=got.finished, jobs=[j.to_dict() for j in got.jobs])
