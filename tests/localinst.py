"""A local instance's init as a real process, without moto: for the init's own tests.

``InitUnderTest`` prepares an instance folder the way the runner does (private root,
shims, user data), starts ``python -S -m infra.local.init`` and offers ``systemctl``
inside the instance, its status and console, and the host path of an instance path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from infra.local import isolation
from infra.local.ami import ROOT, LocalAmi, write_shims
from infra.local.runner import BASE_PATH

NAMESPACES, _WHY = isolation.namespaces_work()
MODES = ["namespaces", "fallback"]


def mode_param(mode: str):
    import pytest

    marks = [pytest.mark.skipif(not NAMESPACES, reason=f"namespaces unavailable: {_WHY}")] if mode == "namespaces" \
        else []
    return pytest.param(mode, marks=marks, id=mode)


class InitUnderTest:
    def __init__(self, base: Path, user_data: str, *, mode: str = "fallback", run_as_user: bool = False,
                 cgroup_procs: Path | None = None, baked: bool = True):
        self.dir = base / f"i-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir(parents=True)
        self.ns = mode == "namespaces"
        ami = LocalAmi.this_checkout()
        self.root = isolation.prepare_root(self.dir, src=ami.src if baked else None, venv=ami.venv if baked else None,
                                           private_mounts=self.ns)
        if self.ns:
            isolation.ensure_mount_points()
        else:
            user_data = isolation.rewrite_paths(user_data, self.root)
        (self.dir / "user-data").write_text(user_data)
        write_shims(self.dir / "bin", python=sys.executable, namespaces=self.ns)
        self.env = {"PATH": f"{self.dir / 'bin'}:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root",
                    "IMGREC_INIT_SOCKET": f"imgrec-test-{os.getpid()}-{self.dir.name}"}
        argv = [sys.executable, "-S", "-m", "infra.local.init", "--instance-dir", str(self.dir),
                "--socket", self.env["IMGREC_INIT_SOCKET"]]
        if self.ns:
            argv += ["--namespaces", "--src", str(ami.src), "--venv", str(ami.venv)]
        if run_as_user:
            argv += ["--run-as-user"]
        if cgroup_procs is not None:
            argv += ["--cgroup-procs", str(cgroup_procs)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "init.out", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def path(self, instance_path: str) -> Path:
        """Where an instance path (e.g. /var/log/x) is on the host."""
        return self.root / instance_path.lstrip("/")

    def systemctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.dir / "bin" / "systemctl"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def status(self) -> dict:
        try:
            return json.loads((self.dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def unit(self, name: str) -> dict:
        return self.status().get("units", {}).get(name, {})

    def console(self) -> str:
        path = self.dir / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, predicate, timeout: float = 15, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"init exited with {self.proc.returncode} waiting for {what}:\n{self.console()}")
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; console:\n{self.console()}")

    def booted(self, timeout: float = 15) -> dict:
        return self.wait(lambda: self.status() if self.status().get("boot") in ("ok", "failed") else None,
                         timeout, "the user data to finish")

    def shutdown(self, timeout: float = 30) -> float:
        """SIGTERM the init (the instance shutting down); returns the seconds until it exited."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        """Whatever happened: nothing of this instance outlives the test."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in psutil.process_iter(["environ"]):
            try:
                if (p.info["environ"] or {}).get("IMGREC_INIT_SOCKET") == self.env["IMGREC_INIT_SOCKET"]:
                    p.kill()
            except psutil.Error:
                pass


# ---------------------------------------------------------------- work through a local instance

def send_images(clients, settings, count: int, start: int = 0) -> set[str]:
    """Upload ``count`` generated JPEGs and queue a request for each; returns the request ids."""
    from infra.messages import ImageRequest
    from infra.observe import queue_url
    from tests.images import jpeg_bytes

    url = queue_url(clients.sqs, settings.req_queue)
    ids = set()
    for i in range(start, start + count):
        key = f"uploads/{time.time_ns()}-img{i}.jpg"
        version = clients.s3.put_object(Bucket=settings.in_bucket, Key=key, Body=jpeg_bytes(i))["VersionId"]
        request = ImageRequest.new(key, version, f"img{i}.jpg")
        clients.sqs.send_message(QueueUrl=url, MessageBody=request.to_json())
        ids.add(request.request_id)
    return ids


def collect_results(clients, settings, want: set[str], timeout: float) -> dict:
    """Drain the response queue until every id in ``want`` has a result; request id -> result."""
    from infra.messages import ImageResult
    from infra.observe import queue_url

    url = queue_url(clients.sqs, settings.resp_queue)
    got: dict = {}
    deadline = time.monotonic() + timeout
    while not want <= set(got) and time.monotonic() < deadline:
        for m in clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            result = ImageResult.from_json(m["Body"])
            got[result.request_id] = result
            clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def local_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries an init socket name containing ``marker``."""
    out = []
    for p in psutil.process_iter(["environ"]):
        try:
            if marker in (p.info["environ"] or {}).get("IMGREC_INIT_SOCKET", "") and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def host_mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def worker_processes(runner_pid: int) -> list[psutil.Process]:
    """The app-tier worker processes (``python -m app_tier``) on the instances of the runner ``runner_pid``."""
    try:
        family = psutil.Process(runner_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in family:
        try:
            if "app_tier" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out
