"""The dashboard blueprint alone in a Flask app, served by waitress in a thread, on a free port."""

from __future__ import annotations

import threading

import requests
from flask import Flask
from waitress.server import create_server

from infra.local.moto_server import free_port
from web_tier.dashboard import make_dashboard_blueprint


class DashboardServer:
    """A Flask app holding only the dashboard blueprint, served by waitress in a thread."""

    def __init__(self, settings, clients, **kwargs):
        self.app = Flask(__name__)
        self.bp = make_dashboard_blueprint(settings, clients, **kwargs)
        self.app.register_blueprint(self.bp)
        self.port = free_port()
        self.server = create_server(self.app, host="127.0.0.1", port=self.port, threads=8)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.bp.sampler.stop()
        self.server.close()
        self.thread.join(5)

    def metrics(self, since=None) -> dict:
        resp = requests.get(f"{self.url}/api/metrics", params={"since": since} if since else None, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def latest(self) -> dict:
        return self.metrics()["latest"] or {}
