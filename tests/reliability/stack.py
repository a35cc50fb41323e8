"""The local stack as separate processes, so a test can kill or restart any one of them.

``python -m infra up`` stops everything when one child exits (what a person at a
terminal wants), so the fault cases run the tiers themselves with tests/procs.py:
runner (instances), controller and web tier, all pointed at a ``FaultProxy`` in front of
the stack's own moto server, with IAM enforced as in ``make run``: the runner hands each
instance its profile's role, the controller and web tier run as the web role, and the
test's own checks go to moto directly with the administrator's keys.
Also here: submitting images through the JSON API and the end-of-case audit
(every job answered, one output object per image, queues empty).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from infra.clients import Clients, make_client
from infra.config import Settings
from infra.local.account import LocalAccount, open_account, remove_admin_credentials
from infra.local.credentials import CredentialServer
from infra.local.moto_server import MotoServer, free_port
from infra.local.runner import consoles_text
from infra.local.stack import provision_stack, upload_artifact
from infra.observe import InstanceState, app_instances, queue_depth, queue_url
from tests.localinst import worker_processes
from tests.procs import start_module, stop_process, wait_for, wait_http
from tests.reliability.faultproxy import FaultProxy

log = logging.getLogger(__name__)

# Faster recovery than the production 60 s: a killed worker's messages come back in 10 s.
VISIBILITY_S = 10
# Each injected fault can cost a held message one receive; 3 would dead-letter a message that
# two kills and an outage happened to hit. Production keeps 3 (see docs/SECURITY.md).
FAULT_MAX_RECEIVES = 6


# A restarted controller waits out its dead predecessor's lease before it acts: keep that short here.
CONTROLLER_LEASE_S = 3.0


class ProcStack:
    """moto (its own: IAM enforced) <- fault proxy <- runner (instances) + controller + web tier, each its own
    process."""

    def __init__(self, data_dir: Path, **overrides):
        prefix = f"r{uuid.uuid4().hex[:8]}"
        self.logs = Path(data_dir) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(port=free_port(), log_file=open(self.logs / "moto.log", "ab"))  # noqa: SIM115
        moto_url = self.moto.url
        self.proxy = FaultProxy(self.moto.port).start()
        self.direct = Settings.from_env(
            {}, endpoint_url=moto_url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
            web_instance_name=f"{prefix}-web", data_dir=str(data_dir), web_port=free_port(),
            receive_wait_s=2, visibility_timeout_s=VISIBILITY_S, max_receive_count=FAULT_MAX_RECEIVES,
            max_attempts=3, scaling="course", min_instances=1, max_instances=4, request_timeout_s=120,
            **{"controller_lease_s": CONTROLLER_LEASE_S, **overrides})
        self.settings = self.direct.replace(endpoint_url=self.proxy.url)  # what the tiers use
        self.clients: Clients | None = None  # the administrator's, once the account exists
        self.account: LocalAccount | None = None
        self.credential_server: CredentialServer | None = None
        self.url = f"http://127.0.0.1:{self.settings.web_port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> ProcStack:
        self.moto.start()
        # As `make run`: an administrator, then enforcement, then the stack from its template (the instances'
        # user data names the proxy's endpoint). The keys file names the proxy's endpoint too, so the runner
        # (which plays EC2 with those keys) finds it.
        self.account, _ = open_account(self.settings)
        self.clients = Clients(self.direct, credentials=self.account.admin)
        self.settings, outputs = provision_stack(self.settings, self.clients)
        self.credential_server = CredentialServer(
            self.direct, make_client("sts", self.direct, credentials=self.account.ec2_service)).start()
        upload_artifact(self.settings, self.clients, outputs)
        self.start_tier("runner")
        self.start_tier("controller")
        self.start_tier("web")
        wait_http(f"{self.url}/healthz", timeout=60)
        wait_for(lambda: self.running_instances() >= 1 and self.workers_ready() >= 1, 120, what="first worker")
        return self

    def start_tier(self, name: str) -> subprocess.Popen:
        module = {"runner": "infra.local.runner", "controller": "controller", "web": "web_tier"}[name]
        role = {} if name == "runner" else self.credential_server.env_for_role(self.account.web_role)
        self.procs[name] = start_module(module, self.settings, log_path=self.logs / f"{name}.log", **role)
        return self.procs[name]

    def restart_web(self) -> float:
        """SIGTERM the web tier, start a new one on the same port; returns the seconds it was away."""
        started = time.monotonic()
        stop_process(self.procs["web"], timeout=10)
        self.start_tier("web")
        wait_http(f"{self.url}/healthz", timeout=60)
        return time.monotonic() - started

    def kill(self, name: str) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    def workers(self) -> list[psutil.Process]:
        """The worker processes alive on the runner's instances."""
        return worker_processes(self.procs["runner"].pid) if "runner" in self.procs else []

    def workers_ready(self) -> int:
        return consoles_text(self.direct.data_dir).count(" ready: ")

    def consoles(self) -> str:
        """Every instance's console output (boot script, init, worker)."""
        return consoles_text(self.direct.data_dir)

    def running_instances(self) -> int:
        return sum(i.state == InstanceState.RUNNING for i in app_instances(self.clients.ec2, self.direct))

    def processes(self) -> dict[str, psutil.Process]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[name] = psutil.Process(proc.pid)
        for w in self.workers():
            out[f"worker pid {w.pid}"] = w
        return out

    def stop(self) -> None:
        for name in ("web", "controller", "runner"):
            if name in self.procs:
                stop_process(self.procs[name], timeout=15)
        self.proxy.stop()
        if self.credential_server is not None:
            self.credential_server.stop()
        self.moto.stop()
        remove_admin_credentials(self.direct)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------- clients of the JSON API

@dataclass
class Submitted:
    ids: dict[str, str] = field(default_factory=dict)  # image name -> job id
    client_errors: int = 0  # refused or failed POSTs, retried


def submit_all(url: str, images: dict[str, bytes], *, per_post: int = 10, deadline_s: float = 180) -> Submitted:
    """POST /api/jobs in chunks until every image has a job id; errors (503, refused, reset) are retried."""
    out = Submitted()
    pending = list(images)
    deadline = time.monotonic() + deadline_s
    with requests.Session() as http:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} images never accepted; last errors {out.client_errors}")
            chunk, pending = pending[:per_post], pending[per_post:]
            files = [("files", (name, images[name], "image/jpeg")) for name in chunk]
            try:
                resp = http.post(f"{url}/api/jobs", files=files, timeout=60)
                body = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else {}
            except (requests.RequestException, ValueError):
                resp, body = None, {}
            for job in body.get("jobs", []):
                out.ids[job["name"]] = job["id"]
            retry = [n for n in chunk if n not in out.ids]
            if retry:
                out.client_errors += 1
                pending = retry + pending
                time.sleep(0.5)
            assert resp is None or resp.status_code in (202, 503) or retry == [], (resp.status_code, body)
    return out


def wait_jobs(url: str, ids: list[str], timeout_s: float = 240) -> dict[str, dict]:
    """Poll ``GET /api/jobs?ids=`` until every job is done or failed; tolerates a web tier that is away."""
    jobs: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        todo = [i for i in ids if jobs.get(i, {}).get("status") in (None, "queued")]
        if not todo:
            return jobs
        for start in range(0, len(todo), 100):
            chunk = todo[start:start + 100]
            try:
                with urllib.request.urlopen(f"{url}/api/jobs?ids={','.join(chunk)}", timeout=30) as resp:
                    for job in json.load(resp)["jobs"]:
                        jobs[job["id"]] = job
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.5)
        time.sleep(0.5)
    return jobs


@dataclass
class Audit:
    """The end-of-case invariants; ``problems`` is empty when nothing was lost or stuck."""

    answered: int
    lost: list[str]
    failed: list[str]
    missing_outputs: list[str]
    extra_outputs: list[str]
    req_visible: int
    req_in_flight: int
    dlq: int
    resp: int

    @property
    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} jobs never answered, e.g. {self.lost[:3]}")
        if self.failed:
            out.append(f"{len(self.failed)} jobs failed, e.g. {self.failed[:3]}")
        if self.missing_outputs or self.extra_outputs:
            out.append(f"outputs missing {self.missing_outputs[:3]} ({len(self.missing_outputs)}), "
                       f"unexpected {self.extra_outputs[:3]} ({len(self.extra_outputs)})")
        if self.req_visible or self.req_in_flight or self.dlq or self.resp:
            out.append(f"queues not empty: request {self.req_visible} visible + {self.req_in_flight} in flight, "
                       f"DLQ {self.dlq}, response {self.resp}")
        return out


def output_keys(clients: Clients, settings: Settings, prefix: str) -> list[str]:
    keys = []
    for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=settings.out_bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def audit(stack_url: str, clients: Clients, settings: Settings, submitted: Submitted, name_prefix: str,
          timeout_s: float = 240) -> Audit:
    """Wait for every job, then check outputs (exactly one object per image) and the queues (drained)."""
    ids = list(submitted.ids.values())
    jobs = wait_jobs(stack_url, ids, timeout_s)
    lost = [i for i in ids if jobs.get(i, {}).get("status") in (None, "queued")]
    failed = [f"{j['name']}: {j.get('error')}" for j in jobs.values() if j.get("status") == "failed"]
    expected = {Path(n).stem for n in submitted.ids}
    sqs = clients.sqs
    # Results are persisted before deletion: give the last deletes and redeliveries a moment to settle.
    depth = wait_for_queues(sqs, settings)
    keys = output_keys(clients, settings, name_prefix)
    return Audit(
        answered=len(ids) - len(lost), lost=lost, failed=failed,
        missing_outputs=sorted(expected - set(keys)), extra_outputs=sorted(set(keys) - expected)
        + sorted(k for k in set(keys) if keys.count(k) > 1),
        req_visible=depth["req"].visible, req_in_flight=depth["req"].in_flight,
        dlq=depth["dlq"].visible + depth["dlq"].in_flight, resp=depth["resp"].visible + depth["resp"].in_flight)


def wait_for_queues(sqs, settings: Settings, timeout_s: float = 3 * VISIBILITY_S) -> dict:
    urls = {k: queue_url(sqs, n) for k, n in (("req", settings.req_queue), ("resp", settings.resp_queue),
                                               ("dlq", settings.dlq))}
    deadline = time.monotonic() + timeout_s
    while True:
        depth = {k: queue_depth(sqs, u) for k, u in urls.items()}
        if all(d.visible + d.in_flight == 0 for d in depth.values()) or time.monotonic() > deadline:
            return depth
        time.sleep(0.5)


# ---------------------------------------------------------------- synchronous clients during a fault

@dataclass
class SyncOutcome:
    name: str
    status: int  # 0: no HTTP answer (connection refused or reset)
    text: str
    waited_s: float
    started: float = 0.0  # time.monotonic() when it was sent
    job_id: str = ""
    receives: int = 1  # times its request was received (a worker that died holding it makes it 2, ...)

    def waited_beyond(self, outages: list[tuple[float, float]]) -> float:
        """The wait less the time AWS was unreachable meanwhile (nothing can answer during an outage)."""
        end = self.started + self.waited_s
        overlap = sum(max(0.0, min(end, b) - max(self.started, a)) for a, b in outages)
        return self.waited_s - overlap


class SyncProbe:
    """Course-API clients (``POST /``) sending unique images one after another while a fault plays, so a case can
    say how long a synchronous client waited: never longer than its message's visibility timeout plus 10 s (a
    worker that dies holding it costs one visibility timeout; nothing costs the 120 s request timeout)."""

    def __init__(self, url: str, prefix: str, clients: int = 2):
        self.url, self.prefix, self.n = url, prefix, clients
        self.outcomes: list[SyncOutcome] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> SyncProbe:
        from tests.images import jpeg_bytes

        def client(k: int) -> None:
            i = 0
            with requests.Session() as http:
                while not self._stop.is_set():
                    name = f"{self.prefix}sync{k}-{i:03d}.jpg"
                    started = time.monotonic()
                    try:
                        resp = http.post(self.url, files={"myfile": (name, jpeg_bytes(700 + i % 30, size=(120, 90)),
                                                                     "image/jpeg")}, timeout=180)
                        status, text, job_id = resp.status_code, resp.text, resp.headers.get("X-Job-Id", "")
                    except requests.RequestException as err:
                        status, text, job_id = 0, type(err).__name__, ""
                    self.outcomes.append(SyncOutcome(name, status, text, time.monotonic() - started, started, job_id))
                    i += 1
                    if status != 200:
                        self._stop.wait(0.5)

        self._threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(self.n)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(200)
        ids = [o.job_id for o in self.outcomes if o.job_id]
        jobs = wait_jobs(self.url, ids, timeout_s=60) if ids else {}
        for o in self.outcomes:
            o.receives = int(jobs.get(o.job_id, {}).get("receives") or 1)

    @property
    def answered(self) -> list[SyncOutcome]:
        """Answered with the image's own label (200, ``<stem>:<label>``)."""
        return [o for o in self.outcomes if o.status == 200 and o.text.startswith(Path(o.name).stem + ":")]

    def longest_s(self, outages: list[tuple[float, float]] = ()) -> float:
        """The longest wait of an answered request, less the outages it lived through."""
        return max((o.waited_beyond(list(outages)) for o in self.outcomes if o.status in (200, 422, 504)),
                   default=0.0)

    def over_bound(self, bound_s: float, per_receive_s: float, outages: list[tuple[float, float]] = ()) -> list:
        """Answered requests that waited longer than ``bound_s`` plus ``per_receive_s`` for each receive after
        the first (a worker that died holding it), beyond the outages they lived through."""
        return [o for o in self.outcomes if o.status in (200, 422, 504)
                and o.waited_beyond(list(outages)) > bound_s + per_receive_s * (o.receives - 1)]
