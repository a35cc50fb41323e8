"""Batches users can take home: ``GET /api/batches/<id>`` (progress and results) and ``<id>.csv``.

A batch is every job submitted with the same batch id (one ``POST /api/jobs`` with
many files, or the page's uploads one by one with ``?batch=<id>``), read with one
query on the job store's batch index, so any web process answers for it.
"""

from __future__ import annotations

import csv
import io
import logging

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Response, jsonify

from infra.jobstore import Job, JobStatus
from web_tier.api import BATCH_ID_RE, batch_links
from web_tier.intake import Rejected
from web_tier.upload import state

log = logging.getLogger(__name__)

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


def _batch(batch_id: str) -> list[Job]:
    if not BATCH_ID_RE.match(batch_id):
        raise Rejected(404, "unknown batch id")
    try:
        jobs = state().store.batch(batch_id)
    except (ClientError, BotoCoreError) as err:
        log.error("reading batch %s failed: %s", batch_id, err)
        raise Rejected(503, "job store unavailable, try again") from None
    if not jobs:
        raise Rejected(404, "unknown batch id")
    return jobs


@bp.get("/api/batches/<batch_id>.csv")
def batch_csv(batch_id: str):
    jobs = _batch(batch_id)
    return Response(csv_text(jobs), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="imgrec-batch-{batch_id}.csv"', "Cache-Control": "no-store"})


@bp.get("/api/batches/<batch_id>")
def batch(batch_id: str):
    jobs = _batch(batch_id)
    n = counts(jobs)
    return jsonify(batch=batch_links(batch_id), total=len(jobs), counts=n, finished=n[JobStatus.QUEUED.value] == 0,
                   jobs=[j.to_dict() for j in jobs])
