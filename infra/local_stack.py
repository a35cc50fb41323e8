"""`make run`: the whole system on this machine, on a moto server at 127.0.0.1:4566."""

from __future__ import annotations

import logging
import os
import sys
import time

from infra.config import ConfigError, Settings
from infra.moto_server import MotoServer

log = logging.getLogger(__name__)
LOCAL_ENDPOINT = "http://127.0.0.1:4566"


def main() -> int:
    os.environ.setdefault("AWS_ENDPOINT_URL", LOCAL_ENDPOINT)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    from infra.clients import Clients
    from infra.provision import provision

    try:
        server = MotoServer(port=int(settings.endpoint_url.rsplit(":", 1)[1])).start()
    except RuntimeError as err:
        print(f"cannot start the local stack: {err}", file=sys.stderr)
        return 1
    try:
        print(provision(settings, Clients(settings)))
        print(f"moto server on {server.url}; Ctrl-C stops it")
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
