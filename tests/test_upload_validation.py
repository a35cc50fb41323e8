"""Request validation on ``POST /``: bad uploads get the right 4xx with a one-line reason and never reach
S3 or the request queue.

Pure validation needs no server process: these go through the real app (``create_app``) with Flask's test
client, against provisioned moto resources so "nothing stored, nothing enqueued" is checked for real. A few
of the same cases, and everything that depends on waitress (declared and chunked over-size bodies), still
go over real HTTP in tests/test_web.py.
"""

from __future__ import annotations

import io

import pytest

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.observe import bucket_object_count, queue_depth, queue_url
from tests.helpers import flask_app
from tests.images import jpeg_bytes
from tests.procs import web_settings
from web_tier import get_state

SMALL_LIMIT = 200_000  # bytes: lets the over-size case stay small


@pytest.fixture(scope="module")
def app_settings(moto_server, tmp_path_factory):
    """One provisioned set for the module: every case must leave it empty, so they can share it."""
    settings = web_settings(moto_server, tmp_path_factory.mktemp("validation") / "data", max_upload_bytes=SMALL_LIMIT)
    provision(settings, Clients(settings))
    return settings


@pytest.fixture(scope="module")
def app(app_settings):
    with flask_app(app_settings) as app:
        yield app


# (case, multipart files as {field: (file name, bytes)}, status, reason the one line must contain)
BAD_UPLOADS = [
    ("wrong field", {"image": ("a.jpg", jpeg_bytes(1))}, 400, "no file"),
    ("empty file", {"myfile": ("a.jpg", b"")}, 400, "empty"),
    ("no file selected", {"myfile": ("", b"")}, 400, "no file selected"),
    ("html named .png", {"inputFile": ("x.png", b"<html><script>alert(1)</script></html>")}, 415, "not an image"),
    ("jpeg magic then junk", {"myfile": ("j.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 100)}, 415, "image"),
    ("backslash path", {"myfile": ("..\\win.jpg", jpeg_bytes(1))}, 400, "path"),
    ("slash only", {"myfile": ("a/b.jpg", jpeg_bytes(1))}, 400, "path"),
    ("control char", {"myfile": ("a\x07b.jpg", jpeg_bytes(1))}, 400, "control"),
    ("tab", {"myfile": ("a\tb.jpg", jpeg_bytes(1))}, 400, "control"),
    ("delete char", {"myfile": ("a\x7fb.jpg", jpeg_bytes(1))}, 400, "control"),
    ("zero-width space", {"myfile": ("a\u200bb.jpg", jpeg_bytes(1))}, 400, "control"),
    ("very long", {"myfile": ("a" * 300 + ".jpg", jpeg_bytes(1))}, 400, "longer"),
    ("bidi override", {"myfile": ("gpj\u202e.exe", jpeg_bytes(1))}, 400, "control"),
    ("over 255 UTF-8 bytes", {"myfile": ("\u7167" * 90 + ".png", jpeg_bytes(1))}, 400, "bytes"),
    ("only dots", {"myfile": (". .", jpeg_bytes(1))}, 400, "usable"),
    ("over the limit", {"myfile": ("big.png", b"\x89PNG" + b"\0" * SMALL_LIMIT)}, 413, "larger"),
]


def nothing_enqueued(settings, clients) -> None:
    depth = queue_depth(clients.sqs, queue_url(clients.sqs, settings.req_queue))
    assert depth.backlog == 0, "a refused upload reached the request queue"
    assert bucket_object_count(clients.s3, settings.in_bucket) == 0, "a refused upload was stored"


@pytest.mark.parametrize("files,status,reason", [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_is_refused_with_one_line_and_never_enqueued(client, app, files, status, reason):
    data = {field: (io.BytesIO(body), name) for field, (name, body) in files.items()}
    resp = client.post("/", data=data, content_type="multipart/form-data")
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert reason.lower() in text.lower()
    assert "\n" not in text.strip() and len(text) < 200
    state = get_state(app)
    nothing_enqueued(state.settings, state.clients)
