"""One request -> a decoded image, or a verdict on why not: permanent (answer with an error) or retry.

The split matters: a permanent failure (missing object, not an image) is answered at
once and its message deleted, so it never loops; anything else (S3 5xx, throttling,
network) is retried by leaving the message in the queue, and the redrive policy
moves it to the dead-letter queue if it keeps failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from app_tier.preprocess import BadImage, decode_image
from infra.messages import ImageRequest

log = logging.getLogger(__name__)

# Codes meaning "this exact object version is not there and will not appear by retrying".
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "InvalidArgument", "NoSuchBucket"}
_MISSING_REASONS = {
    "NoSuchKey": "input object not found",
    "NoSuchVersion": "input object version not found",
    "InvalidArgument": "input object version id is invalid",
    "NoSuchBucket": "input bucket not found",
}


class Verdict(StrEnum):
    OK = "ok"
    BAD_INPUT = "bad_input"  # answer with an error result and delete the request
    RETRY = "retry"  # leave the message: it comes back, and goes to the DLQ after maxReceiveCount


@dataclass
class Fetched:
    verdict: Verdict
    image: Image.Image | None = None
    reason: str | None = None
    nbytes: int = 0


def client_error_verdict(code: str, where: str = "") -> tuple[Verdict, str]:
    """Classify an S3 error code from get_object (pure); ``where`` names the object in the reason.

    A missing key is a 404 only for a caller allowed ``s3:ListBucket`` on the bucket; without it S3
    answers 403 ("If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP status code
    403 Forbidden error", API_GetObject), which cannot be told from a real denial, so it is retried
    (and reaches the dead-letter queue) rather than answered. The app role is granted ListBucket on
    the input bucket for this reason.
    """
    suffix = f": {where}" if where else ""
    if code in _MISSING_CODES:
        return Verdict.BAD_INPUT, _MISSING_REASONS.get(code, "input object not found") + suffix
    if code in ("AccessDenied", "403"):
        return Verdict.RETRY, (f"S3 AccessDenied{suffix} (missing, with no s3:ListBucket on the bucket to say so, "
                               f"or not readable by this role)")
    return Verdict.RETRY, f"S3 error {code}{suffix}"


def fetch_image(s3, bucket: str, request: ImageRequest, *, max_bytes: int, min_side: int | None = None) -> Fetched:
    """Get the exact object version the request names and decode it; never raises for expected failures."""
    kwargs = {"Bucket": bucket, "Key": request.key}
    if request.version:
        kwargs["VersionId"] = request.version
    try:
        resp = s3.get_object(**kwargs)
        size = int(resp.get("ContentLength", 0))
        if size > max_bytes:
            resp["Body"].close()
            return Fetched(Verdict.BAD_INPUT, reason=f"file is {size} bytes, over the {max_bytes} byte limit")
        data = resp["Body"].read()
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", "Unknown"))
        where = f"s3://{bucket}/{request.key}" + (f" version {request.version}" if request.version else "")
        verdict, reason = client_error_verdict(code, where)
        log.log(logging.INFO if verdict is Verdict.BAD_INPUT else logging.ERROR,
                "get_object s3://%s/%s version %s for request %s failed: %s",
                bucket, request.key, request.version, request.request_id, code)
        return Fetched(verdict, reason=reason)
    except (BotoCoreError, OSError) as err:
        log.error("get_object s3://%s/%s for request %s failed: %s", bucket, request.key, request.request_id, err)
        return Fetched(Verdict.RETRY, reason=f"S3 read failed: {type(err).__name__}")
    try:
        image = decode_image(data, min_side=min_side)
    except BadImage as err:
        return Fetched(Verdict.BAD_INPUT, reason=str(err), nbytes=len(data))
    return Fetched(Verdict.OK, image=image, nbytes=len(data))
