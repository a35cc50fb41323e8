"""The local backend: every running moto app-tier instance boots like an EC2 instance.

moto keeps instances as records and runs nothing; this runner makes them real. It
watches the fleet (``describe_instance_status``, as a console does) and when an
instance enters ``running`` it reads that instance's user data and type through the
EC2 API, gives it a private file system under ``<data dir>/instances/<id>/``
(``infra.local.isolation``), the memory of its type (``infra.local.cgroups``) and an
init (``infra.local.init``) that runs the user data with bash and then stands in for
systemd. When the instance leaves ``running`` (stop, terminate) the init stops its
units the way systemd does. A boot that fails is reported (runner log, console, tag
``imgrec:health``) and the instance terminated, so the controller replaces it; an OOM
kill is reported the same way.

Credentials: an instance's processes get an environment built from nothing (never the
runner's own) plus ``credentials_env(instance_id, profile_arn)``: the hook for the
instance profile's role credentials (e.g. a loopback container-credentials server's
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` + token); by default the runner's own keys,
which moto accepts whatever they are.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.local import cgroups, isolation
from infra.local.ami import ROOT, LocalAmi, write_shims
from infra.local.imds import Metadata, MetadataServer
from infra.observe import FleetReader, InstanceState
from infra.process import settings_and_logging
from infra.tags import HEALTH_TAG
from infra.userdata import worker_runtime

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.25
DEFAULT_HALT_S = 2.5  # at runner shutdown: units get this long (not their TimeoutStopSec), then SIGKILL
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class Phase(StrEnum):
    BOOTING = "booting"
    UP = "up"  # user data finished with 0
    FAILED = "failed"  # boot failed or the init died: reported, instance terminated
    HALTING = "halting"  # init told to shut down


@dataclass
class LocalInstance:
    id: str
    dir: Path
    proc: subprocess.Popen
    group: cgroups.InstanceGroup | None
    memory_mib: int
    launched: float
    phase: Phase = Phase.BOOTING
    oom_kills: int = 0
    halted_at: float = 0.0
    keep_disk: bool = False  # stopped (EBS kept) rather than terminated

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    def status(self) -> dict:
        try:
            return json.loads((self.dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}


def default_credentials_env(instance_id: str, profile_arn: str) -> dict[str, str]:
    """Without a local account (a bare moto, as in some tests): the runner's own keys (moto accepts any)."""
    out = {k: os.environ[k] for k in CREDENTIAL_VARS if os.environ.get(k)}
    out.setdefault("AWS_ACCESS_KEY_ID", "testing")
    out.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    return out


def profile_credentials(settings: Settings):
    """``credentials_env`` for a stack with a local account: each instance gets its instance profile's role
    from a loopback credential server (boto3's container provider), and nothing at all without a profile,
    as on EC2. Returns ``(credentials_env, server)``, or ``(default_credentials_env, None)`` without an account."""
    from infra.clients import local_admin_credentials, make_client
    from infra.local.account import profile_role
    from infra.local.credentials import CredentialServer

    admin = local_admin_credentials(settings)
    if admin is None:
        log.warning("no local account (keys file) for %s: instances get the runner's own keys",
                    settings.endpoint_url)
        return default_credentials_env, None
    server = CredentialServer.for_stack(settings).start()
    iam = make_client("iam", settings, credentials=admin)
    roles: dict[str, str] = {}

    def credentials_env(instance_id: str, profile_arn: str) -> dict[str, str]:
        if not profile_arn:
            log.warning("instance %s has no instance profile: its processes get no AWS credentials", instance_id)
            return {}
        if profile_arn not in roles:
            roles[profile_arn] = profile_role(iam, profile_arn)
        return server.env_for_role(roles[profile_arn], session_name=instance_id)

    return credentials_env, server


def detect_features(setting: str, ami: LocalAmi) -> tuple[isolation.Features, cgroups.Hierarchy | None]:
    if setting == "off":
        why = "IMGREC_LOCAL_ISOLATION=off"
        return isolation.Features(False, False, False, {"namespaces": why, "memory cgroup": why, "User=": why}), None
    off: dict[str, str] = {}
    ns, why = isolation.namespaces_work()
    if not ns:
        off["namespaces"] = f"{why}; instance paths are rewritten under its folder instead"
    hierarchy, why = cgroups.Hierarchy.detect()
    if hierarchy is None:
        off["memory cgroup"] = f"{why}; instances share the host's memory"
    as_user = ns and isolation.reachable_by_others(ami.venv / "bin" / "python")
    if not as_user:
        off["User="] = ("needs namespaces" if not ns else
                        f"the AMI's python ({os.path.realpath(ami.venv / 'bin' / 'python')}) is not reachable by an "
                        "unprivileged user") + "; units run as root"
    return isolation.Features(ns, hierarchy is not None, as_user, off), hierarchy


class Runner:
    """Reconciles local instances with moto's running app-tier instances; ``tick()`` is one pass."""

    def __init__(self, settings: Settings, ec2, features: isolation.Features, *, ami: LocalAmi,
                 hierarchy: cgroups.Hierarchy | None = None, imds: MetadataServer | None = None,
                 credentials_env: Callable[[str, str], dict[str, str]] = default_credentials_env,
                 python: str = sys.executable, clock: Callable[[], float] = time.monotonic):
        self.settings, self.ec2, self.features, self.ami = settings, ec2, features, ami
        self.hierarchy = hierarchy if features.memory_cgroup else None
        self.imds, self.credentials_env, self.python, self.clock = imds, credentials_env, python, clock
        self.instances: dict[str, LocalInstance] = {}
        self.base = Path(settings.data_dir).resolve() / "instances"
        self._fleet = FleetReader(ec2, settings)
        self.booted = 0
        if features.namespaces:
            isolation.ensure_mount_points()

    # ------------------------------------------------------------ the loop

    def tick(self) -> None:
        try:
            fleet = self._fleet.read()
        except (ClientError, BotoCoreError) as err:
            log.warning("cannot list app-tier instances (%s); local instances left as they are", err)
            fleet = None
        if fleet is not None:
            states = {i.id: i.state for i in fleet}
            for iid in sorted(set(self.instances) - {i for i, s in states.items() if s == InstanceState.RUNNING}):
                self.halt(iid, keep_disk=states.get(iid) in (InstanceState.STOPPING, InstanceState.STOPPED))
            for iid in sorted(i for i, s in states.items() if s == InstanceState.RUNNING and i not in self.instances):
                try:
                    self.boot(iid)
                except (ClientError, BotoCoreError, OSError) as err:
                    log.error("cannot boot instance %s (%s); trying again next tick", iid, err)
        self.watch()

    def boot(self, iid: str) -> LocalInstance:
        started = self.clock()
        desc = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        raw = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData").get("UserData", {})
        user_data = base64.b64decode(raw.get("Value", "")) if raw.get("Value") else b""
        itype = desc.get("InstanceType", "")
        profile = desc.get("IamInstanceProfile", {}).get("Arn", "")
        mib, known = cgroups.memory_mib(itype)
        if not known:
            log.warning("instance %s: type %s not in the memory table; giving it %d MiB", iid, itype, mib)
        inst_dir = self.base / iid
        inst_dir.mkdir(parents=True, exist_ok=True)
        ns = self.features.namespaces
        root = isolation.prepare_root(inst_dir, src=self.ami.src if self.ami.baked else None,
                                      venv=self.ami.venv if self.ami.baked else None, private_mounts=ns)
        if not ns:
            user_data = isolation.rewrite_paths(user_data.decode(errors="replace"), root).encode()
        (inst_dir / "user-data").write_bytes(user_data)
        write_shims(inst_dir / "bin", python=self.python, namespaces=ns)
        group = None
        if self.hierarchy is not None:
            group = cgroups.InstanceGroup.create(self.hierarchy, os.getpid(), iid, mib * cgroups.MIB)
        env = {"PATH": f"{inst_dir / 'bin'}:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root",
               "IMGREC_INIT_SOCKET": f"imgrec-init-{os.getpid()}-{iid}", **self.credentials_env(iid, profile)}
        if self.imds is not None:
            self.imds.register(Metadata(iid, itype, desc.get("ImageId", ""), user_data))
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.imds.endpoint(iid)
        argv = [self.python, "-S", "-m", "infra.local.init", "--instance-dir", str(inst_dir),
                "--socket", env["IMGREC_INIT_SOCKET"]]
        if group is not None:
            argv += ["--cgroup-procs", str(group.procs_file)]
        if ns:
            argv += ["--namespaces"]
            if self.ami.baked:
                argv += ["--src", str(self.ami.src), "--venv", str(self.ami.venv),
                         "--hide", str(Path(self.settings.data_dir).resolve())]
        if self.features.run_as_user:
            argv += ["--run-as-user"]
        with open(inst_dir / "console.log", "ab") as out:
            out.write(f"---- {time.strftime('%Y-%m-%dT%H:%M:%S')} instance {iid} ({itype}, {mib} MiB) boots; "
                      f"{self.features.summary()}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        inst = LocalInstance(iid, inst_dir, proc, group, mib, started)
        self.instances[iid] = inst
        self.booted += 1
        log.info("instance %s running: booting from its user data (%d bytes, %s, %d MiB%s), init pid %d in %.0f ms",
                 iid, len(user_data), itype, mib, "" if group else " not enforced", proc.pid,
                 (self.clock() - started) * 1000)
        return inst

    def watch(self) -> None:
        for inst in list(self.instances.values()):
            code = inst.proc.poll()
            if inst.phase == Phase.HALTING:
                if code is not None:
                    self.finish(inst, code)
                continue
            if code is not None:
                self.fail(inst, f"its init exited with {code}")
                continue
            self.check_oom(inst)
            status = inst.status()
            if inst.phase == Phase.BOOTING and status.get("boot") == "ok":
                inst.phase = Phase.UP
                log.info("instance %s: user data finished in %.1f s", inst.id, self.clock() - inst.launched)
            elif inst.phase == Phase.BOOTING and status.get("boot") == "failed":
                self.fail(inst, f"boot failed: user data exited with {status.get('boot_exit')}")

    def check_oom(self, inst: LocalInstance) -> None:
        if inst.group is None:
            return
        kills = inst.group.oom_kills()
        if kills > inst.oom_kills:
            inst.oom_kills = kills
            message = f"OOM kill in its memory cgroup (limit {inst.memory_mib} MiB, {kills} so far)"
            log.error("instance %s: %s", inst.id, message)
            self.console(inst, f"Out of memory: the kernel killed a process of this instance ({message})")
            self.tag(inst.id, f"OOM kill x{kills} ({inst.memory_mib} MiB)")

    def fail(self, inst: LocalInstance, why: str) -> None:
        """Report a broken instance and terminate it: the controller launches a replacement."""
        inst.phase = Phase.FAILED
        log.error("instance %s FAILED: %s; terminating it so the controller replaces it (console: %s)",
                  inst.id, why, inst.console)
        self.console(inst, f"instance FAILED: {why}; the runner terminates it")
        self.tag(inst.id, why)
        try:
            self.ec2.terminate_instances(InstanceIds=[inst.id])
        except (ClientError, BotoCoreError) as err:
            log.error("cannot terminate failed instance %s: %s", inst.id, err)
            return
        self.halt(inst.id, keep_disk=False)

    def halt(self, iid: str, *, keep_disk: bool) -> None:
        """The instance is stopping or terminated: its init stops every unit (KillSignal, TimeoutStopSec, SIGKILL)."""
        inst = self.instances[iid]
        if inst.phase == Phase.HALTING:
            return
        inst.phase, inst.halted_at, inst.keep_disk = Phase.HALTING, self.clock(), keep_disk
        log.info("instance %s is %s: shutting down its units", iid, "stopping" if keep_disk else "terminated")
        with contextlib.suppress(ProcessLookupError):
            inst.proc.send_signal(signal.SIGTERM)

    def finish(self, inst: LocalInstance, code: int, *, remove_group: bool = True) -> None:
        self.check_oom(inst)
        if inst.group is not None and remove_group:
            inst.group.remove()
        if self.imds is not None:
            self.imds.forget(inst.id)
        if not inst.keep_disk:  # terminated: its root volume goes; the console and status stay for a look
            shutil.rmtree(isolation.instance_root(inst.dir), ignore_errors=True)
        del self.instances[inst.id]
        log.info("instance %s: halted (init exit %s) %.1f s after shutdown began", inst.id, code,
                 self.clock() - inst.halted_at)

    def stop_all(self, timeout: float = DEFAULT_HALT_S) -> None:
        """The host is going down: every instance's units get ``timeout`` s, then SIGKILL, all at once."""
        for iid in list(self.instances):
            self.halt(iid, keep_disk=False)
        deadline = self.clock() + timeout
        while self.instances and self.clock() < deadline:
            self.watch()
            time.sleep(0.05)
        left = list(self.instances.values())
        for inst in left:
            log.error("instance %s did not halt in %.1f s: SIGKILL", inst.id, timeout)
            with contextlib.suppress(ProcessLookupError):
                inst.proc.kill()  # its init: with a PID namespace the kernel ends every process in it
        for inst in left:
            inst.proc.wait()
            self.finish(inst, inst.proc.returncode, remove_group=False)
        groups = [inst.group for inst in left if inst.group is not None]
        deadline = self.clock() + cgroups.EMPTY_WAIT_S
        while groups and self.clock() < deadline:  # the killed processes' memory is freed in parallel
            groups = [g for g in groups if not g.remove(wait_s=0)]
            if groups:
                time.sleep(0.02)
        for group in groups:
            log.error("memory cgroup %s still busy; processes left: %s", group.path, group.pids())

    # ------------------------------------------------------------ reporting

    @staticmethod
    def console(inst: LocalInstance, message: str) -> None:
        with contextlib.suppress(OSError), open(inst.console, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} runner: {message}\n")

    def tag(self, iid: str, value: str) -> None:
        try:
            self.ec2.create_tags(Resources=[iid], Tags=[{"Key": HEALTH_TAG, "Value": value[:255]}])
        except (ClientError, BotoCoreError) as err:
            log.warning("cannot tag instance %s %s=%r: %s", iid, HEALTH_TAG, value, err)


def consoles_text(data_dir: Path | str) -> str:
    """Every local instance's console output, concatenated (tests and tools read it)."""
    base = Path(data_dir) / "instances"
    return "".join(p.read_text(errors="replace") for p in sorted(base.glob("*/console.log")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.runner",
                                     description="Boot every running moto app-tier instance from its user data.")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds between fleet reads (0.25)")
    parser.add_argument("--halt", type=float, default=DEFAULT_HALT_S,
                        help="at shutdown, seconds units get before SIGKILL (2.5)")
    parser.add_argument("--unbaked", action="store_true", help="boot instances from an empty /opt/imgrec "
                        "(runs the install path; needs IMGREC_REPO_URL)")
    args = parser.parse_args(argv)
    settings = settings_and_logging(with_pid=True)
    if not settings.is_local:
        log.warning("AWS_ENDPOINT_URL is unset: on real AWS instances boot themselves; running anyway")
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ami = LocalAmi.this_checkout(baked=not args.unbaked)
    if ami.baked:
        ami.ensure_model(settings.model, worker_runtime(settings))
    features, hierarchy = detect_features(settings.local_isolation, ami)
    (log.warning if features.off else log.info)("%s", features.summary())
    if hierarchy is not None:
        for name in hierarchy.sweep_stale():
            log.info("removed memory cgroup %s of a runner that is gone", name)
    from infra.clients import make_client

    imds = MetadataServer().start()
    credentials_env, credential_server = profile_credentials(settings)
    runner = Runner(settings, make_client("ec2", settings, pool=2), features, ami=ami, hierarchy=hierarchy,
                    imds=imds, credentials_env=credentials_env)
    log.info("runner ready: instances %s-* boot from their user data (AMI %s + %s, %s)",
             settings.app_instance_prefix, ami.src, ami.venv, "baked" if ami.baked else "not baked")
    try:
        while not stop["flag"]:
            try:
                runner.tick()
            except Exception:  # the runner's death would take every instance with it
                log.exception("runner tick failed; trying again next tick")
            time.sleep(args.poll)
    finally:
        runner.stop_all(args.halt)
        imds.stop()
        if credential_server is not None:
            credential_server.stop()
        if hierarchy is not None:
            cgroups.remove_runner_group(hierarchy, os.getpid())
        log.info("runner stopped; %d instances booted during the run", runner.booted)
    return 0


if __name__ == "__main__":
    from infra.local.runner import main as _main  # log under "infra.local.runner", not "__main__"

    sys.exit(_main())
