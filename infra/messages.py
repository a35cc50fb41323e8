"""The wire contract between tiers: request and result messages, object keys, reply queues.

Data flows one way: web -> request queue -> worker -> reply queue -> web. A
request message names an exact object version in the input bucket and the reply
queue of the web process that sent it (AWS's request-response pattern: one reply
queue per producer, the request id as correlation id); it never carries image
bytes and always fits the request queue's 1 KB limit. The worker answers only to
a reply queue of its own stack (``check_reply_to``).
"""

from __future__ import annotations

import dataclasses
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
MAX_NAME_BYTES = 255  # UTF-8, as most file systems allow; keeps two names and a reply URL under 1 KB
# Refused outright: control, format (bidi overrides, zero-width), surrogate, private-use and
# unassigned code points, and the line/paragraph separators.
_HOSTILE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEY_PUNCTUATION = frozenset("._ -")
REPLY_INFIX = "reply"
REPLY_TOKEN_RE = re.compile(r"^[0-9a-f]{12}$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # job ids, and batch ids read back (new batch ids: web BATCH_ID_RE)


class BadMessage(ValueError):
    """A queue message that is not one of ours; it is dropped, never retried."""


class UnknownVersion(BadMessage):
    """A message of a schema version this code does not read (a newer tier during a rolling upgrade).

    Not ours to drop: the worker leaves it for redelivery (an upgraded worker may take it) and the
    redrive policy moves it to the dead-letter queue, whence ``python -m infra redrive`` brings it back.
    ``ids`` holds what could be read of it anyway (``request_id``, ``name``, ``batch_id``), so its job
    can be marked failed with the reason."""

    def __init__(self, version, ids: dict[str, str]):
        super().__init__(f"unknown message schema version {version!r} (this code reads {SCHEMA_VERSION})")
        self.version = version
        self.ids = ids

    def failed_result(self, **fields) -> ImageResult | None:
        """The result its job is marked failed with once it is dead-lettered (by the worker that saw its
        last receive, else by the reaper); None when its request id could not be read."""
        if not self.ids.get("request_id"):
            return None
        why = (f"its request is message schema version {self.version}, which the workers do not read yet: "
               f"dead-lettered; python -m infra redrive retries it after the upgrade")
        return ImageResult(self.ids["request_id"], self.ids.get("name") or "", error=why,
                           batch_id=self.ids.get("batch_id"), **fields)


class BadName(ValueError):
    """A file name that cannot be made into a safe object key."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def safe_name(filename: str | None) -> str:
    """Check an uploaded file name and return it as a flat S3 key (NFC-normalised UTF-8).

    People's names are accepted in any script (``café.jpg``, ``照片.png``). Hostile
    names are refused with ``BadName`` (a one-line reason for the 400): path
    separators or ``..`` (a key must not escape its prefix), control and format
    characters, over 200 characters or 255 UTF-8 bytes. Characters other than
    letters, marks, digits and ``. _ -`` and space become ``_`` in the key.
    """
    if not filename or not filename.strip():
        raise BadName("missing file name")
    if any(unicodedata.category(c) in _HOSTILE_CATEGORIES for c in filename):
        raise BadName("file name contains control or format characters")
    name = unicodedata.normalize("NFC", filename)
    if "/" in name or "\\" in name or ".." in name:
        raise BadName("file name contains a path (/, \\ or ..)")
    if len(name) > MAX_NAME_CHARS or len(name.encode()) > MAX_NAME_BYTES:
        raise BadName(f"file name is longer than {MAX_NAME_CHARS} characters or {MAX_NAME_BYTES} UTF-8 bytes")
    cleaned = "".join(c if c in _KEY_PUNCTUATION or unicodedata.category(c)[0] in "LMN" else "_"
                      for c in name.strip())
    if cleaned.strip("._ ") == "":
        raise BadName("file name has no usable characters")
    return cleaned


def output_key(name: str) -> str:
    """The output bucket key for an image: its safe name without extension (the course convention)."""
    safe = safe_name(name)
    stem, _ = os.path.splitext(safe)
    return stem or safe


def reply_queue_name(prefix: str, token: str) -> str:
    """A web process's own reply queue: ``<prefix>-reply-<12 hex>``."""
    if not REPLY_TOKEN_RE.match(token):
        raise ValueError(f"reply queue token {token!r} is not 12 lowercase hex digits")
    return f"{prefix}-{REPLY_INFIX}-{token}"


def is_reply_queue_name(name: str, prefix: str) -> bool:
    head = f"{prefix}-{REPLY_INFIX}-"
    return name.startswith(head) and bool(REPLY_TOKEN_RE.match(name[len(head):]))


def check_reply_to(reply_to: str, own_queue_url: str, prefix: str, shared_queue: str) -> str | None:
    """Why a request's reply queue is refused, or None when it is one of this stack's (pure).

    Accepted: the stack's shared response queue or a ``<prefix>-reply-<id>`` queue, at the
    same endpoint and account as ``own_queue_url`` (the request queue the message came from).
    """
    base, _, name = reply_to.rpartition("/")
    own_base = own_queue_url.rpartition("/")[0]
    if base != own_base:
        return f"reply queue {reply_to[:120]!r} is not in this stack's account and region"
    if name != shared_queue and not is_reply_queue_name(name, prefix):
        return f"reply queue {name[:80]!r} is not one of stack {prefix}'s reply queues"
    return None


@dataclass(frozen=True)
class ImageRequest:
    request_id: str
    key: str
    version: str | None
    name: str
    sent_at: float
    reply_to: str | None = None  # the sender's reply queue URL; None: the stack's response queue
    batch_id: str | None = None  # the batch the job counts in (its result updates the batch's counters)

    @classmethod
    def new(cls, key: str, version: str | None, name: str, request_id: str | None = None,
            reply_to: str | None = None, batch_id: str | None = None) -> ImageRequest:
        return cls(request_id or new_request_id(), key, version, name, time.time(), reply_to, batch_id)

    def to_json(self) -> str:
        body = _dump(asdict(self))
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
                reply_to=None if data.get("reply_to") is None else str(data["reply_to"]),
                batch_id=None if data.get("batch_id") is None else str(data["batch_id"]),
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
    receives: float | None = None  # how many times the request was received (1: no worker lost it on the way)
    batch_id: str | None = None  # routing, like request_id: which batch's counters the result moves

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def answer(self) -> str:
        """The course-format body: ``<name without extension>:<label>`` (or the error)."""
        stem = os.path.splitext(self.name)[0]
        return f"{stem}:{self.label}" if self.ok else f"{stem}:error: {self.error}"

    def to_json(self) -> str:
        return _dump(asdict(self))

    @classmethod
    def from_json(cls, body: str) -> ImageResult:
        data = _load(body)
        fields = {k: data.get(k) for k in cls.__dataclass_fields__}
        if not fields["request_id"] or fields["name"] is None:
            raise BadMessage("result message lacks request_id or name")
        for f in dataclasses.fields(cls):
            value = fields[f.name]
            numeric = "float" in str(f.type)
            ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool) if numeric
                                   else isinstance(value, str))
            if not ok:
                raise BadMessage(f"result field {f.name} has the wrong type ({type(value).__name__})")
        return cls(**fields)


# The one declaration of what a result carries: the message above, the job store's item
# (infra/jobstore.py) and the JSON API's job all derive their result fields from it. The routing
# fields (which job, which batch) are the job's own, not the result's.
ROUTING_FIELDS = ("request_id", "batch_id")
RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ImageResult) if f.name not in ROUTING_FIELDS)


# A result message whose worker already recorded it in the job store carries this message attribute
# (attributes, not the body: a web process of an older version ignores it and records it again).
RECORDED_ATTRIBUTE = "imgrec-recorded"


def recorded_attributes() -> dict:
    """SendMessage(Batch) MessageAttributes of a result the worker recorded itself."""
    return {RECORDED_ATTRIBUTE: {"DataType": "String", "StringValue": "1"}}


def recorded_by_worker(message: dict) -> bool:
    """Whether a received result message says its worker recorded it in the job store (pure)."""
    attr = message.get("MessageAttributes", {}).get(RECORDED_ATTRIBUTE, {})
    return attr.get("StringValue") == "1"


def _dump(data: dict) -> str:
    """UTF-8 JSON (names in any script cost their UTF-8 bytes, not 6-byte escapes)."""
    return json.dumps({"v": SCHEMA_VERSION, **data}, separators=(",", ":"), ensure_ascii=False)


def _load(body: str) -> dict:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise BadMessage("message body is not JSON") from None
    if not isinstance(data, dict):
        raise BadMessage(f"message body is JSON {type(data).__name__}, not an object")
    if data.get("v") != SCHEMA_VERSION:
        if "v" not in data:
            raise BadMessage("message has no schema version")
        raise UnknownVersion(data.get("v"), readable_ids(data))
    return data


def readable_ids(data: dict) -> dict[str, str]:
    """What a message of another version still says about its job, when those fields look sane (pure)."""
    out = {}
    for key in ("request_id", "batch_id"):
        value = data.get(key)
        if isinstance(value, str) and ID_RE.match(value):
            out[key] = value
    name = data.get("name")
    if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS:
        out["name"] = name
    return out
