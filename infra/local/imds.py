"""Instance metadata (IMDSv2) for local instances, on a loopback port of the runner.

An EC2 instance learns its own id from 169.254.169.254; a local one is given
``AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:<port>/<instance id>`` (botocore's
own variable) and asks the same paths under it: ``PUT /latest/api/token``, then
``GET /latest/meta-data/instance-id`` (``instance-type``, ``ami-id``) and
``/latest/user-data`` with the token. Credentials are not served here (404, so
botocore's chain moves on): the runner gives them through ``credentials_env``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass(frozen=True)
class Metadata:
    instance_id: str
    instance_type: str
    ami_id: str
    user_data: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, fmt, *args):  # quiet: one line per request would swamp the runner's log
        log.debug("imds %s", fmt % args)

    def _split(self) -> tuple[Metadata | None, str]:
        _, iid, rest = (self.path.split("/", 2) + ["", ""])[:3]
        return self.server.instances.get(iid), "/" + rest

    def do_PUT(self):  # noqa: N802 - http.server's naming
        meta, path = self._split()
        if meta is None or path != "/latest/api/token":
            return self._send(404, b"")
        token = secrets.token_urlsafe(24)
        self.server.tokens.add(token)
        return self._send(200, token.encode())

    def do_GET(self):  # noqa: N802
        meta, path = self._split()
        if meta is None:
            return self._send(404, b"")
        if self.headers.get(TOKEN_HEADER) not in self.server.tokens:
            return self._send(401, b"")
        body = {"/latest/meta-data/instance-id": meta.instance_id.encode(),
                "/latest/meta-data/instance-type": meta.instance_type.encode(),
                "/latest/meta-data/ami-id": meta.ami_id.encode(),
                "/latest/user-data": meta.user_data}.get(path)
        return self._send(404, b"") if body is None else self._send(200, body)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    instances: dict[str, Metadata]
    tokens: set[str]


class MetadataServer:
    """One loopback HTTP server for all of a runner's instances, on a thread of its own."""

    def __init__(self, host: str = "127.0.0.1"):
        self._server = _Server((host, 0), _Handler)
        self._server.instances, self._server.tokens = {}, set()
        self._thread = threading.Thread(target=self._server.serve_forever, name="imds", daemon=True)

    def start(self) -> MetadataServer:
        self._thread.start()
        return self

    def endpoint(self, instance_id: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{instance_id}"

    def register(self, meta: Metadata) -> None:
        self._server.instances[meta.instance_id] = meta

    def forget(self, instance_id: str) -> None:
        self._server.instances.pop(instance_id, None)

    def stop(self) -> None:
        """Close the socket; the serving thread is a daemon (shutdown() would wait up to its 0.5 s poll)."""
        self._server.server_close()
