"""Start and stop a moto server (S3, SQS, EC2, CloudWatch, IAM, STS over real HTTP).

`python -m infra moto` runs one in the foreground on 127.0.0.1:4566; tests and
`make run` use ``MotoServer`` to own one as a child process. It starts permissive
(moto's default); ``infra.local.moto_iam.set_enforcement`` switches IAM checks on. Unless
``IMGREC_STRICT_AWS=off``, it is as strict as AWS where moto is kinder (``infra.local.strict``).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566
START_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_moto(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers moto's own API (so it is moto, not some other server)."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class MotoServer:
    """A moto server in a child process; a context manager that waits until it answers."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, log_file=None,
                 env: dict[str, str] | None = None):
        self.host, self.port = host, port
        self._env = env or {}  # e.g. {"IMGREC_STRICT_AWS": "off"} for a plain moto
        self.url = f"http://{host}:{port}"
        self._log_file = log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        if port_in_use(self.host, self.port):
            what = "a moto server" if is_moto(self.url) else "another program"
            raise RuntimeError(f"port {self.port} on {self.host} is already used by {what}; stop it or pick another port")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self._env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local.moto_server", "-H", self.host, "-p", str(self.port)],
            cwd=ROOT,
            stdout=self._log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log_file else subprocess.DEVNULL,
            env=env,
            # Own session: the terminal's Ctrl-C must not kill moto before the workers drain.
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited at start with code {self.proc.returncode}")
            if is_moto(self.url, timeout=0.5):
                log.info("moto server up at %s (pid %s)", self.url, self.proc.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {START_TIMEOUT_S:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        log.info("moto server at %s stopped", self.url)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    with MotoServer(host, port) as server:
        print(f"moto server listening on {server.url} (Ctrl-C stops it)", flush=True)
        try:
            while server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


# Corrections that are always on, one module per behaviour moto gets wrong (each says AWS's wording and why).
ALWAYS_ON = ("moto_fixes",)
# Those for a service moto loads only when a request first needs it (CloudFormation's parser imports every
# resource model moto has: 1-2 s and ~150 MB, which a run that never uses it should not pay for).
ON_LOAD = {"cloudformation": ("moto_speedups:cloudformation", "moto_cfn_buckets", "moto_cfn_events",
                              "moto_cfn_rollback", "moto_cfn_retain", "moto_cfn_outputs", "moto_cfn_changesets",
                              "moto_cfn_load_balancers", "moto_cfn_deletions", "moto_cfn_queues")}
_load_lock = threading.Lock()
_loaded: set[str] = set()  # the ON_LOAD services whose corrections are in


def _apply(names: tuple[str, ...]) -> None:
    for name in names:
        module, _, function = name.partition(":")
        getattr(importlib.import_module(f"infra.local.{module}"), function or "apply")()


def apply_corrections() -> None:
    """The corrections always on now; each ON_LOAD service's once, when moto first loads its backend."""
    from moto import backends

    _apply(ALWAYS_ON)
    original = backends._import_backend

    def _import_backend(module_name: str, backends_name: str):
        found = original(module_name, backends_name)  # moto calls this on every get_backend
        if module_name in ON_LOAD and module_name not in _loaded:
            with _load_lock:  # a request that races the warm-up waits until the corrections are in
                if module_name not in _loaded:
                    _apply(ON_LOAD[module_name])
                    _loaded.add(module_name)
        return found

    backends._import_backend = _import_backend


def warm_up() -> threading.Thread:
    """Load CloudFormation's backend (and its corrections) and build SSM's (it loads AWS's public parameters,
    which a stack's image parameter reads) in the background while the server starts answering: the local
    stack's first change set then waits for neither. moto builds backends under its own lock."""
    from moto import backends
    from moto.core import DEFAULT_ACCOUNT_ID

    def load() -> None:
        backends.get_backend("cloudformation")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        backends.get_backend("ssm")[DEFAULT_ACCOUNT_ID][region]

    thread = threading.Thread(target=load, name="warm-up", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":  # the child MotoServer starts: moto's own server, with our speed-ups and corrections
    from infra.local import moto_iam, moto_speedups, strict

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("infra").setLevel(logging.INFO)
    moto_speedups.apply()
    apply_corrections()
    warm_up()
    moto_iam.apply()  # only matters once IAM is enforced (moto_iam.set_enforcement)
    strict.apply()  # AWS's harder semantics (IMGREC_STRICT_AWS), and our control route on this server
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
