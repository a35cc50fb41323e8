"""Upload intake: check a file (pure), then store it and enqueue its request (actuation).

Every check runs before anything touches S3 or SQS, so bad input never reaches
the queue. Content is sniffed with Pillow, never trusted from the name or the
Content-Type the client sent.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, UnidentifiedImageError

from infra.jobstore import STORE_ERRORS, Job, JobStatus
from infra.messages import BadName, ImageRequest, ImageResult, new_request_id, safe_name
from web_tier.state import NotReady

log = logging.getLogger(__name__)

COURSE_FIELDS = ("myfile", "inputFile")
READ_CHUNK = 64 * 1024


class Rejected(Exception):
    """An upload we refuse: an HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds, for a Retry-After header (503)


@dataclass(frozen=True)
class Upload:
    """A checked upload: safe to store and enqueue."""

    name: str  # the client's file name as sent (checked by safe_name; answered back unchanged)
    key: str  # the input-bucket key
    data: bytes
    image_format: str


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.3g} MB" if n >= 1024 * 1024 else f"{n} bytes"


def read_bounded(stream, max_bytes: int) -> bytes:
    """Read at most ``max_bytes``; one byte more means the file is too big (chunked bodies have no length)."""
    buf = bytearray()
    while len(buf) <= max_bytes:
        chunk = stream.read(min(READ_CHUNK, max_bytes + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) > max_bytes:
        raise Rejected(413, f"file is larger than the {_mb(max_bytes)} limit")
    return bytes(buf)


def sniff_image(data: bytes) -> str:
    """The image format Pillow finds in ``data``; ``Rejected(415)`` when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, pixels = img.format or "unknown", img.width * img.height
            img.verify()
    except Image.DecompressionBombError:
        raise Rejected(413, "image has too many pixels") from None
    except UnidentifiedImageError:
        raise Rejected(415, "file content is not an image (checked by content, not by name)") from None
    except Exception as err:  # Pillow raises many types for damaged files
        raise Rejected(415, f"file content is not a readable image: {str(err).splitlines()[0][:120]}") from None
    # Checked here, not with warnings.catch_warnings: that is not thread-safe under 200 requests.
    if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        raise Rejected(413, f"image has too many pixels ({pixels}, limit {Image.MAX_IMAGE_PIXELS})")
    return fmt


def check_upload(filename: str | None, data: bytes, max_bytes: int) -> Upload:
    """All checks on one file, cheapest first. Raises ``Rejected``."""
    try:
        key = safe_name(filename)
    except BadName as err:
        raise Rejected(400, f"bad file name: {err}") from None
    if not data:
        raise Rejected(400, "file is empty")
    if len(data) > max_bytes:
        raise Rejected(413, f"file is larger than the {_mb(max_bytes)} limit")
    return Upload(name=filename, key=key, data=data, image_format=sniff_image(data))


def submit(state, upload: Upload, job_id: str | None = None, received_at: float | None = None,
           batch_id: str | None = None) -> str:
    """Store the image, enqueue its request, record the job; returns the job (= request) id.

    Raises ``Rejected(503)`` when S3 or SQS refuse (nothing is recorded then).
    """
    created = received_at or time.time()
    s3, sqs, settings = state.clients.s3, state.clients.sqs, state.settings
    try:
        reply_to = state.reply_to()
    except NotReady:
        raise Rejected(503, "reply queue unavailable (this web process is starting, or the stack is not provisioned), try again") from None
    try:
        put = s3.put_object(Bucket=settings.in_bucket, Key=upload.key, Body=upload.data,
                            ContentType=f"image/{upload.image_format.lower()}")
    except (ClientError, BotoCoreError) as err:
        log.error("put_object %s/%s failed: %s", settings.in_bucket, upload.key, err)
        raise Rejected(503, "image store unavailable, try again") from None
    request = ImageRequest.new(upload.key, put.get("VersionId"), upload.name, request_id=job_id, reply_to=reply_to,
                               batch_id=batch_id)
    state.router.expect(request.request_id)
    try:
        sqs.send_message(QueueUrl=state.request_queue_url(), MessageBody=request.to_json())
    except (ClientError, BotoCoreError) as err:
        log.error("send_message for job %s (%s) failed: %s", request.request_id, upload.key, err)
        raise Rejected(503, "request queue unavailable, try again") from None
    # Recorded after the send: a process killed in between leaves no job that never runs (the result
    # then makes the record), and the record merges with a result that comes first.
    job = Job(request.request_id, upload.name, JobStatus.QUEUED, key=upload.key, version=request.version,
              batch_id=batch_id, created_at=created, enqueued_at=request.sent_at)
    try:
        state.store.add(job)
    except STORE_ERRORS as err:
        log.error("recording job %s (%s) failed: %s; its result will record it", job.id, upload.key, err)
    log.info("job %s enqueued: key=%s version=%s batch=%s reply=%s", job.id, upload.key, request.version, batch_id,
             state.reply.name or "-")
    return job.id


def record_refused(state, filename: str | None, reason: str, batch_id: str, received_at: float) -> str | None:
    """A file refused at intake still gets a failed job in its batch, so the batch's CSV lists it."""
    name = (filename or "").encode("utf-8", "replace").decode("utf-8")[:300]
    job_id = new_request_id()
    job = Job(job_id, name, JobStatus.FAILED, batch_id=batch_id, created_at=received_at, result_at=time.time(),
              result=ImageResult(job_id, name, error=reason))
    try:
        state.store.add(job)
    except STORE_ERRORS as err:
        log.error("recording refused file %r of batch %s failed: %s", name, batch_id, err)
        return None
    return job_id
