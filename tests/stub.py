"""A stand-in endpoint that answers in the course format, for trying the generator without the stack.

``POST /`` with multipart ``myfile`` answers ``<stem>:<label>`` from a label map;
per-image ``Quirk``s make it fail, sleep or garble so tests see every error kind.
It is served by waitress in a thread, so it is a real HTTP server on a real port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask, request
from waitress.server import create_server

from workload.truth import image_stem


@dataclass(frozen=True)
class Quirk:
    status: int = 200
    sleep_s: float = 0.0
    body: str | None = None  # replaces the whole answer
    label: str | None = None  # replaces the label only


def create_stub_app(labels: dict[str, str], quirks: dict[str, Quirk] | None = None,
                    default_label: str = "tench", delay_s: float = 0.0) -> Flask:
    quirks = quirks or {}
    app = Flask("workload-stub")
    app.config["seen"] = []

    @app.get("/")
    def index():
        return "course-format stub: POST an image as multipart field myfile\n"

    @app.post("/")
    def classify():
        upload = request.files.get("myfile")
        if upload is None or not upload.filename:
            return "missing multipart field myfile\n", 400
        data = upload.read()
        stem = image_stem(upload.filename)
        app.config["seen"].append((upload.filename, len(data)))
        quirk = quirks.get(stem, Quirk())
        if delay_s or quirk.sleep_s:
            time.sleep(delay_s + quirk.sleep_s)
        if quirk.body is not None:
            return quirk.body, quirk.status
        return f"{stem}:{quirk.label or labels.get(stem, default_label)}", quirk.status

    return app


@contextmanager
def serve_in_thread(app: Flask, threads: int = 32) -> Iterator[str]:
    """Serve ``app`` on a free localhost port; yields its base URL and always shuts down."""
    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, name="workload-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Let handlers still sleeping finish, then close every socket from inside the loop's own
        # thread (closing them from here races its select()); an empty map ends the loop.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=10)
        try:
            server.trigger.pull_trigger(lambda: [d.close() for d in list(server._map.values())])
        except OSError:  # the trigger is closed: the loop has already closed every socket and ended
            pass
        thread.join(timeout=5)
        assert not thread.is_alive(), "the stub server's loop did not end"
