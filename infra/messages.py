"""The wire contract between tiers: request and result messages, and object keys.

Data flows one way: web -> request queue -> worker -> response queue -> web. A
request message names an exact object version in the input bucket and never
carries image bytes; it always fits the request queue's 1 KB limit.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass

from infra.config import MAX_QUEUE_MESSAGE_BYTES

SCHEMA_VERSION = 1
MAX_NAME_CHARS = 200
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._ -]")


class BadMessage(ValueError):
    """A queue message that is not one of ours; it is dropped, never retried."""


class BadName(ValueError):
    """A file name that cannot be made into a safe object key."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def safe_name(filename: str | None) -> str:
    """Check an uploaded file name and return it as a flat S3 key.

    Hostile names are refused with ``BadName`` (a one-line reason for the 400):
    path separators or ``..`` (a key must not escape its prefix), control
    characters, non-ASCII, over 200 characters. Other odd printable characters
    become ``_``.
    """
    if not filename or not filename.strip():
        raise BadName("missing file name")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in filename):
        raise BadName("file name contains control characters")
    if "/" in filename or "\\" in filename or ".." in filename:
        raise BadName("file name contains a path (/, \\ or ..)")
    if not filename.isascii():
        raise BadName("file name must be ASCII")
    if len(filename) > MAX_NAME_CHARS:
        raise BadName(f"file name is longer than {MAX_NAME_CHARS} characters")
    cleaned = _UNSAFE_CHARS.sub("_", filename.strip())
    if cleaned.strip("._ ") == "":
        raise BadName("file name has no usable characters")
    return cleaned


def output_key(name: str) -> str:
    """The output bucket key for an image: its safe name without extension (the course convention)."""
    safe = safe_name(name)
    stem, _ = os.path.splitext(safe)
    return stem or safe


@dataclass(frozen=True)
class ImageRequest:
    request_id: str
    key: str
    version: str | None
    name: str
    sent_at: float

    @classmethod
    def new(cls, key: str, version: str | None, name: str, request_id: str | None = None) -> ImageRequest:
        return cls(request_id or new_request_id(), key, version, name, time.time())

    def to_json(self) -> str:
        body = json.dumps({"v": SCHEMA_VERSION, **asdict(self)}, separators=(",", ":"))
        if len(body.encode()) > MAX_QUEUE_MESSAGE_BYTES:
            raise ValueError(f"request message is {len(body.encode())} bytes, over the queue's 1 KB limit")
        return body

    @classmethod
    def from_json(cls, body: str) -> ImageRequest:
        data = _load(body)
        try:
            return cls(
                request_id=str(data["request_id"]),
                key=str(data["key"]),
                version=None if data.get("version") is None else str(data["version"]),
                name=str(data["name"]),
                sent_at=float(data["sent_at"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadMessage(f"request message lacks a field: {err}") from None


@dataclass(frozen=True)
class ImageResult:
    request_id: str
    name: str
    label: str | None = None
    score: float | None = None
    error: str | None = None
    worker: str | None = None
    sent_at: float | None = None  # when the web tier enqueued the request
    done_at: float | None = None
    infer_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def answer(self) -> str:
        """The course-format body: ``<name without extension>:<label>`` (or the error)."""
        stem = os.path.splitext(self.name)[0]
        return f"{stem}:{self.label}" if self.ok else f"{stem}:error: {self.error}"

    def to_json(self) -> str:
        return json.dumps({"v": SCHEMA_VERSION, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> ImageResult:
        data = _load(body)
        fields = {k: data.get(k) for k in cls.__dataclass_fields__}
        if not fields["request_id"] or fields["name"] is None:
            raise BadMessage("result message lacks request_id or name")
        return cls(**fields)


def _load(body: str) -> dict:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise BadMessage("message body is not JSON") from None
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise BadMessage(f"unknown message schema {data.get('v') if isinstance(data, dict) else type(data)}")
    return data
