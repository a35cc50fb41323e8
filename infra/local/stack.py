"""`make run`: the whole system on this machine, against a moto server.

Starts, in order: moto (127.0.0.1:4566); the local account (an administrator whose keys
go to ``<data dir>/aws/credentials``, the EC2 stand-in; ``infra.local.account``) with IAM
enforced unless ``IMGREC_LOCAL_IAM=off``; the stack from the one template deploy uses
(``infra.cfn``: roles and policies, buckets, queues, job table, the app tier's launch
template, the web instance record), through a change set as deploy does; the credential
server; the local instance runner (each running moto app instance boots from the
template's user data: ``infra.local.runner``); the web tier as ``IMGREC_WEB_PROCESSES``
processes sharing one port
(SO_REUSEPORT: the kernel spreads connections; the first answers from the shared response
queue, the others from their own reply queues) (with the web role's credentials; an instance's processes get
its profile's role from the runner); the model artifact into the stack's bucket; the controller. Each runs as a child in its own session, so the
terminal's Ctrl-C reaches only this process, which then stops the children in
reverse order (web first, moto last; the runner stops every instance through its
units) and leaves no process, mount or cgroup behind. Its signal handlers only set a
flag (``StopSignals``): a second Ctrl-C or SIGTERM during the stop is acknowledged, never
lets the stop stop half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import LOCAL_ENDPOINT, ConfigError, Settings
from infra.local.ami import AmiError, LocalAmi
from infra.local.cgroups import pid_alive
from infra.local.moto_server import MotoServer, is_moto, port_in_use
from infra.tags import Role
from infra.userdata import ONNX_RUNTIME, worker_runtime

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0
STOP_GRACE_S = 8.0
# The runner gives units 2.5 s at shutdown (runner --halt) before SIGKILL; it needs a little more than that.
STOP_GRACE_RUNNER_S = 6.0
STOP_GRACE_MOTO_S = 1.5  # moto keeps nothing worth a longer wait: everything is in its memory
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen


class AlreadyRunning(RuntimeError):
    pass


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised by the main thread (never by a signal handler) at a safe point once Ctrl-C or SIGTERM came."""


class StopSignals:
    """SIGINT and SIGTERM only set a flag here; the main thread checks it between steps and in its loop.

    Raising from the handler (KeyboardInterrupt) aborted whatever the main thread was doing, the stop
    itself included: a second Ctrl-C in quick succession, as a terminal sends it, or a second SIGTERM,
    interrupted the teardown and left moto running on its port. Now every further signal is only counted
    and said once, and the stop runs to its end.
    """

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._said = 0
        self._previous: dict[int, object] = {}

    def __call__(self, signum, _frame) -> None:
        self.count += 1
        self.first = self.first or signal.Signals(signum).name

    def install(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        """At a safe point in start-up or the loop: leave for the stop if a signal came."""
        if self.count:
            raise StopRequested(self.first)

    def say_repeats(self) -> None:
        """During the stop: say once per new signal that it is already under way."""
        if self.count > 1 and self._said < self.count - 1:
            self._said = self.count - 1
            say("  already stopping: everything stops within a few seconds (a further Ctrl-C is not needed)")


def claim_pidfile(path: Path) -> None:
    """One local stack per data dir: a second `make run` says who is running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            pid = int(path.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and pid_alive(pid):
            raise AlreadyRunning(f"a local stack is already running (pid {pid}); stop it with Ctrl-C in its "
                                 f"terminal or `kill {pid}`")
    path.write_text(str(os.getpid()))


def check_ports(settings: Settings, endpoint_port: int) -> None:
    if port_in_use("127.0.0.1", endpoint_port):
        who = "a moto server (another `make run`?)" if is_moto(settings.endpoint_url) else "another program"
        raise AlreadyRunning(f"port {endpoint_port} is already used by {who}")
    if port_in_use(settings.web_host, settings.web_port):
        raise AlreadyRunning(f"port {settings.web_port} on {settings.web_host} is already in use; "
                             "set IMGREC_WEB_PORT to another port")


def start_child(name: str, module: str, settings: Settings, log_dir: Path, role_env: dict[str, str],
                **extra_env: str) -> Child:
    """``python -m module`` with ``settings`` as its whole IMGREC_* environment and ``role_env``
    (``CredentialServer.env_for_role``; empty: the administrator's keys file) as its only AWS credentials."""
    from infra.local.credentials import without_credentials

    env = {k: v for k, v in without_credentials(os.environ).items() if not k.startswith("IMGREC_")}
    env.update(settings.to_env(), **role_env, PYTHONUNBUFFERED="1", **extra_env)
    out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    log.info("started %s (pid %s), log %s", name, proc.pid, log_dir / f"{name}.log")
    return Child(name, proc)


def say(*parts: object, sep: str = " ", err: bool = False) -> None:
    """print, except that a reader gone (`make run | tee`: Ctrl-C ends tee too) must not stop the teardown:
    the first broken pipe points the stream at /dev/null, so every later line (and the exit's flush) is dropped."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(*parts, sep=sep, file=stream, flush=True)
    except (BrokenPipeError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def stop_children(children: list[Child], grace: float = STOP_GRACE_S, signals: StopSignals | None = None) -> None:
    """SIGTERM every tier at once (moto stays up while they drain), wait, SIGKILL the process groups
    that remain; moto last. Further Ctrl-Cs meanwhile are only acknowledged (``signals``)."""
    tiers = [c for c in children if c.name != "moto"]
    started = time.monotonic()
    for child in tiers:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in [*tiers, *(c for c in children if c.name == "moto")]:
        if child.name == "moto" and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
        wait_s = {"runner": STOP_GRACE_RUNNER_S, "moto": STOP_GRACE_MOTO_S}.get(child.name, grace / 2)
        if _wait(child.proc, max(0.0, started + wait_s - time.monotonic()), signals):
            say(f"  {child.name} stopped ({time.monotonic() - started:.1f} s after SIGTERM)")
        else:
            log.warning("%s did not stop in %.0f s; killing it", child.name, wait_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        _wait(child.proc, 2, signals)


def _wait(proc: subprocess.Popen, timeout: float, signals: StopSignals | None) -> bool:
    """Wait for ``proc`` up to ``timeout`` s in short steps, acknowledging further signals; True if it ended."""
    deadline = time.monotonic() + timeout
    while True:
        if signals is not None:
            signals.say_repeats()
        try:
            proc.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            return True
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return False


def web_processes(settings: Settings) -> list[tuple[str, dict[str, str]]]:
    """(log name, extra environment) per web process: the first keeps the configured reply queue
    (by default the shared response queue, which graders watch), the others make their own."""
    n = settings.web_processes
    if n == 1:
        return [(str(Role.WEB), {})]
    return [(f"web-{i + 1}", {} if i == 0 else {"IMGREC_REPLY_QUEUE": "own"}) for i in range(n)]


def sweep_instance_cgroups() -> None:
    """A runner killed before it could clean up leaves its instances' memory cgroups: remove them."""
    from infra.local.cgroups import Hierarchy

    hierarchy, _ = Hierarchy.detect()
    if hierarchy is not None:
        for name in hierarchy.sweep_stale():
            log.warning("removed memory cgroup %s left by a runner that was killed", name)


def strict_line(endpoint_url: str) -> str:
    """Which AWS behaviours the running moto emulates (as it reports them), for the start-up banner."""
    from infra.local.strict import describe
    from infra.local.strict.client import state

    try:
        reported = state(endpoint_url)
    except (OSError, ValueError) as err:
        return f"unknown ({err})"
    return describe(bool(reported.get("enabled")), reported.get("defaults", {}))


def status_line(settings: Settings, clients) -> str:
    from infra.observe import app_instances, bucket_object_count, count_by_state, queue_depth, queue_url

    depth = queue_depth(clients.sqs, queue_url(clients.sqs, settings.req_queue))
    fleet = count_by_state(app_instances(clients.ec2, settings))
    done = bucket_object_count(clients.s3, settings.out_bucket)
    states = " ".join(f"{n} {s}" for s, n in fleet.items() if n and s != "terminated") or "0 running"
    from infra.metrics import launch_refusals

    refused = launch_refusals(clients.cloudwatch, settings.metrics_namespace, settings.prefix)
    held = " | launches refused: " + ", ".join(f"{n} {why}" for why, n in refused.items()) if refused else ""
    return (f"backlog {depth.visible} queued + {depth.in_flight} in flight | app tier: {states} "
            f"| images done: {done}{held}")


def provision_stack(settings: Settings, clients, ami: LocalAmi | None = None,
                    **values) -> tuple[Settings, dict[str, str]]:
    """The whole stack from the template, on moto, as deploy puts it on AWS: the moto image stands in for the
    AMI, the default VPC's subnets for the network, and the image's own artifact's checksum is the stack's
    (``values``: other parameters, e.g. ``RepoUrl`` for an unbaked image). Returns the settings the stack's
    processes run with (its launch template) and its outputs."""
    from infra.cfn import artifact, changes, names
    from infra.cfn.stack import put

    ami = ami or LocalAmi.this_checkout()
    ami.ensure_model(settings.model, worker_runtime(settings))
    sha = (artifact.checksum(settings.replace(model_dir=str(ami.models_dir)))  # its instances verify the file
           if worker_runtime(settings) == ONNX_RUNTIME else "")
    vpc, subnets = changes.default_network(clients.ec2)
    _, outputs = put(settings, clients, **{"ImageId": settings.ami_id, "VpcId": vpc, "SubnetIds": subnets,
                                           "ModelArtifactSha256": sha, **values})
    return settings.replace(launch_template=names.launch_template_name(settings)), outputs


def upload_artifact(settings: Settings, clients, outputs: dict[str, str], ami: LocalAmi | None = None):
    """The model artifact into the stack's bucket: after the stack exists, before the controller launches."""
    from infra.cfn import artifact
    from infra.report import Report

    ami = ami or LocalAmi.this_checkout()
    report = Report()
    if worker_runtime(settings) == ONNX_RUNTIME:
        artifact.upload(clients.s3, outputs["ModelBucketName"],
                        artifact.local_artifact(settings.replace(model_dir=str(ami.models_dir))), report)
    return report


def run(settings: Settings) -> int:
    from infra.cfn.stack import stop_web_group, web_group_instances
    from infra.clients import Clients, local_aws_files, make_client
    from infra.local.account import open_account, remove_admin_credentials
    from infra.local.credentials import CredentialServer
    from infra.local.runner import detect_features

    data_dir = Path(settings.data_dir)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "local-stack.pid"
    endpoint_port = int(settings.endpoint_url.rsplit(":", 1)[1].split("/")[0])
    claim_pidfile(pidfile)
    check_ports(settings, endpoint_port)

    # Ctrl-C and SIGTERM set a flag that start-up (between steps) and the main loop check; the children
    # are stopped in `finally`, which no further signal can interrupt.
    signals = StopSignals().install()
    children: list[Child] = []
    credential_server = clients = None
    moto = MotoServer(port=endpoint_port, log_file=open(log_dir / "moto.log", "ab"))  # noqa: SIM115
    try:
        moto.start()
        children.append(Child("moto", moto.proc))
        signals.check()
        say(f"strict AWS emulation: {strict_line(settings.endpoint_url)}")
        account, report = open_account(settings)
        clients = Clients(settings, credentials=account.admin)
        ami = LocalAmi.this_checkout()
        # The runner plays EC2 itself: it reads the fleet with the administrator's keys (found in the keys
        # file) and hands each instance its own profile's role. It starts while the stack goes up.
        children.append(start_child("runner", "infra.local.runner", settings, log_dir, {}))
        credential_server = CredentialServer(
            settings, make_client("sts", settings, credentials=account.ec2_service)).start()
        signals.check()
        settings, outputs = provision_stack(settings, clients, ami)
        signals.check()
        (web_id, *_) = web_group_instances(clients, settings)  # from Auto Scaling: EC2 may not list it yet
        say(report, f"stack {settings.prefix}: {', '.join(sorted(outputs))}", sep="\n")
        web_role = credential_server.env_for_role(account.web_role, web_id)  # the tiers run as the web role
        for name, env in web_processes(settings):
            children.append(start_child(name, "web_tier", settings, log_dir, web_role, **env))
        say(upload_artifact(settings, clients, outputs, ami))
        children.append(start_child("controller", "controller", settings, log_dir, web_role))
        say(detect_features(settings.local_isolation, ami)[0].summary())
        web_url = f"http://{settings.web_host}:{settings.web_port}"
        iam = "enforced" if settings.local_iam_enforced else "NOT enforced (IMGREC_LOCAL_IAM=off)"
        say(f"\nimgrec is starting:\n  upload page  {web_url}/\n  dashboard    {web_url}/dashboard\n"
            f"  AWS endpoint {settings.endpoint_url} (moto; IAM {iam})\n"
            f"  AWS keys     {local_aws_files(settings)[0]} (administrator, profile default; config beside it)\n"
            f"  logs         {log_dir}/\n"
            f"  instances    {data_dir / 'instances'}/<id>/console.log (each boots from its user data;"
            f" isolation: see {log_dir}/runner.log)\nCtrl-C stops everything.\n")
        next_status = time.monotonic() + 2
        while True:
            signals.check()
            for child in children:
                if child.proc.poll() is not None:
                    say(f"{child.name} exited with code {child.proc.returncode}; see {log_dir}/{child.name}.log",
                        err=True)
                    return 1
            if time.monotonic() >= next_status:
                try:
                    say(time.strftime("%H:%M:%S"), status_line(settings, clients))
                except Exception as err:  # a status line must never take the stack down
                    say(f"status unavailable: {err}")
                next_status = time.monotonic() + STATUS_EVERY_S
            time.sleep(0.2)
    except (StopRequested, KeyboardInterrupt):  # KeyboardInterrupt: a SIGINT before the handler was installed
        say(f"\nstopping ({signals.first or 'SIGINT'})…")
        return 0
    finally:
        stopping = time.monotonic()
        if clients is not None:
            try:  # the account as a grader sees it: no web instance once the stack has stopped
                stop_web_group(clients, settings)
            except (ClientError, BotoCoreError) as err:
                log.warning("could not stop the web instance record: %s", err)
        stop_children(children, signals=signals)
        if credential_server is not None:
            credential_server.stop()
        sweep_instance_cgroups()
        remove_admin_credentials(settings)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        signals.say_repeats()
        say(f"local stack stopped ({time.monotonic() - stopping:.1f} s)")
        signals.restore()


def main() -> int:
    os.environ.setdefault("AWS_ENDPOINT_URL", LOCAL_ENDPOINT)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from infra.local.strict.settings import StrictSettings

    try:
        settings = Settings.from_env()
        StrictSettings.from_env()  # a bad IMGREC_STRICT_* value stops us here, not moto after it started
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    if not settings.is_local:
        print("`make run` runs against a local moto server; unset AWS_ENDPOINT_URL only for real AWS "
              "(see docs/DEPLOY.md)", file=sys.stderr)
        return 2
    try:
        # Before anything starts: the image the instances boot must carry their model (or torch), else
        # every instance would fail its boot in turn; the error names the command that adds what is missing.
        LocalAmi.this_checkout().ensure_model(settings.model, worker_runtime(settings))
    except AmiError as err:
        print(f"cannot start: {err}", file=sys.stderr)
        return 2
    try:
        return run(settings)
    except AlreadyRunning as err:
        print(f"cannot start: {err}", file=sys.stderr)
        return 1


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class StackProcess:
    """`python -m infra up` in a child process, for tests and `make bench`.

    Picks free ports unless given, waits until the web tier answers /healthz and
    the fleet is at min, and stops it the way a person does: SIGINT to its process
    group (its own session, as ``setsid`` makes it), which is what Ctrl-C sends.
    """

    def __init__(self, data_dir: Path, *, endpoint_port: int | None = None, web_port: int | None = None,
                 log_path: Path | None = None, **settings_env: str):
        from infra.local.moto_server import free_port

        self.endpoint_port = endpoint_port or free_port()
        self.web_port = web_port or free_port()
        self.data_dir = Path(data_dir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IMGREC_")}
        self.env.update(settings_env)
        self.env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.endpoint_port}",
                        IMGREC_WEB_PORT=str(self.web_port), IMGREC_DATA_DIR=str(self.data_dir),
                        PYTHONUNBUFFERED="1")
        self.settings = Settings.from_env(self.env)
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.log_path = log_path or self.data_dir / "stack.log"
        self.proc: subprocess.Popen | None = None
        self.leftovers: list = []

    def start(self, timeout: float = 120.0) -> StackProcess:
        import urllib.request

        from infra.clients import Clients
        from infra.observe import InstanceState, app_instances

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            # SIGINT back to its default in the child: a caller started in the background of a script
            # inherits it ignored, and Python then installs no KeyboardInterrupt, so "Ctrl-C" would do nothing.
            self.proc = subprocess.Popen([sys.executable, "-m", "infra", "up"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_default_sigint)
        deadline = time.monotonic() + timeout
        clients = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"local stack exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                    healthy = resp.status == 200
                clients = clients or Clients(self.settings)
                running = [i for i in app_instances(clients.ec2, self.settings) if i.state == InstanceState.RUNNING]
                if healthy and len(running) >= self.settings.min_instances and self.workers_ready():
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"local stack not ready within {timeout:.0f} s; see {self.log_path}")

    def workers_ready(self) -> bool:
        """At least min_instances workers have logged that they are ready (on their instances' consoles)."""
        from infra.local.runner import consoles_text

        return consoles_text(self.data_dir).count(" ready: ") >= self.settings.min_instances

    def processes(self):
        """The stack's processes (orchestrator and every descendant)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 15.0, *, sig: int = signal.SIGINT, times: int = 1, gap_s: float = 0.3) -> float:
        """Ctrl-C the stack (``times`` of them, ``gap_s`` apart, as an impatient person does); returns the
        seconds it took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        family = self.processes()
        started = time.monotonic()
        for n in range(times):
            if n:
                time.sleep(gap_s)
            with contextlib.suppress(ProcessLookupError):  # what a terminal's Ctrl-C does: the whole foreground group
                os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        elapsed = time.monotonic() - started
        self.leftovers = [p for p in family[1:] if p.is_running() and p.status() != "zombie"]
        for p in self.leftovers:  # never leave a test's processes behind, whatever went wrong
            with contextlib.suppress(Exception):
                p.kill()
        return elapsed

    def __enter__(self) -> StackProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
