"""The local instance runner against a real moto server: instances boot from their own user data.

Most cases drive ``Runner.tick()`` in this process with small user data (sh units)
so each behaviour takes seconds; the slow ones run ``python -m infra.local.runner``
with the stack's real boot script (its launch template, from the template deploy uses) and the real worker.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.actuator import Ec2Actuator
from infra.local import cgroups
from infra.local.ami import ROOT, LocalAmi
from infra.local.imds import MetadataServer
from infra.local.runner import Runner, consoles_text, detect_features
from infra.local.stack import provision_stack, upload_artifact
from infra.observe import InstanceState, app_instances
from tests.helpers import child_env, launch_template, template_user_data
from tests.localinst import collect_results, host_mounts_mentioning, local_processes, send_images
from tests.procs import log_text, stop_process, wait_for
from web_tier.metrics_source import instance_rows

AMI = LocalAmi.this_checkout()
FEATURES, HIERARCHY = detect_features("auto", AMI)

UNIT_BOOT = """#!/bin/bash
set -euo pipefail
echo "boot of $(cat /etc/hostname 2>/dev/null || echo instance)" >> /var/log/boots
cat > /etc/systemd/system/demo.service <<'EOF'
[Service]
ExecStart=/usr/bin/python3 -c "{program}"
Restart=on-failure
TimeoutStopSec=5
EOF
systemctl daemon-reload
systemctl enable --now demo.service
"""
# Asks the instance metadata for its own id (IMDSv2), writes it, then idles.
WHOAMI = ("import os, time, urllib.request as u; b = os.environ['AWS_EC2_METADATA_SERVICE_ENDPOINT'] + '/latest'; "
          "t = u.urlopen(u.Request(b + '/api/token', method='PUT')).read(); "
          "i = u.urlopen(u.Request(b + '/meta-data/instance-id', headers={'X-aws-ec2-metadata-token': t})).read(); "
          "open('/var/log/whoami', 'wb').write(i); time.sleep(300)")
HOG = "b = b'x' * (700 * 1024 * 1024); import time; time.sleep(300)"  # writes every page: 700 MB resident


def boot_script(program: str) -> str:
    return UNIT_BOOT.format(program=program)


@pytest.fixture
def make_runner(settings, clients):
    made = []

    def make(user_data: str, *, features=FEATURES, instance_type: str = "t3.micro", warm_pool: bool = False, **kw):
        lt_settings = settings.replace(instance_type=instance_type, launch_template=f"{settings.prefix}-lt")
        launch_template(clients.ec2, lt_settings, lt_settings.launch_template, user_data)
        imds = MetadataServer().start()
        runner = Runner(lt_settings, clients.ec2, features, ami=AMI, hierarchy=HIERARCHY, imds=imds, **kw)
        made.append((runner, imds))
        return runner, Ec2Actuator(clients.ec2, lt_settings, warm_pool=warm_pool)

    yield make
    for runner, imds in made:
        runner.stop_all(timeout=5)
        imds.stop()
        if HIERARCHY is not None:
            cgroups.remove_runner_group(HIERARCHY, os.getpid())


def settle(runner: Runner, until, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.tick()
        value = until()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"runner did not reach: {what}\n{consoles_text(runner.settings.data_dir)[-3000:]}")


def console_of(runner: Runner, iid: str) -> str:
    """The instance's console so far ('' before the runner has seen it: EC2 lists a new instance after a lag)."""
    path = runner.base / iid / "console.log"
    return path.read_text() if path.exists() else ""


def host_file(runner: Runner, iid: str, path: str) -> Path:
    return runner.base / iid / "root" / path.lstrip("/")


def test_each_instance_boots_from_its_own_user_data_and_terminate_stops_its_units(make_runner, clients):
    runner, act = make_runner(boot_script(WHOAMI))
    a, b = act.launch(2)
    for iid in (a, b):
        found = settle(runner, lambda iid=iid: host_file(runner, iid, "/var/log/whoami").exists()
                       and host_file(runner, iid, "/var/log/whoami").read_text(), what=f"{iid} to ask its metadata")
        assert found == iid  # its own id, from its own metadata endpoint
    assert host_file(runner, a, "/var/log/boots").read_text().count("boot of") == 1  # private /var/log each
    inst_a = runner.instances[a]
    group = inst_a.group
    assert (group is not None) == FEATURES.memory_cgroup
    if group is not None:
        assert group.pids(), "the instance's processes are in its memory cgroup"
        assert (group.path / ("memory.limit_in_bytes" if group.version == 1 else "memory.max")).read_text().strip() \
            == str(1024 * cgroups.MIB)  # t3.micro

    act.remove([a])
    settle(runner, lambda: a not in runner.instances, what="the terminated instance to halt")
    console = (runner.base / a / "console.log").read_text()
    assert "shutdown: stopping all units" in console and "Stopped demo.service." in console
    assert not local_processes(a), "a process of the terminated instance is still running"
    assert not (runner.base / a / "root").exists()  # its disk went with it
    if group is not None:
        assert not group.path.exists()
    assert b in runner.instances and runner.instances[b].proc.poll() is None


def test_stopped_instance_keeps_its_disk_and_starts_its_enabled_units_without_rerunning_user_data(make_runner):
    runner, act = make_runner(boot_script(WHOAMI), warm_pool=True)
    (iid,) = act.launch(1)
    settle(runner, lambda: host_file(runner, iid, "/var/log/whoami").exists(), what="first boot")
    act.remove([iid])  # stop_instances
    settle(runner, lambda: iid not in runner.instances, what="the stop")
    host_file(runner, iid, "/var/log/whoami").unlink()
    assert act.launch(1) == [iid]  # start_instances
    settle(runner, lambda: host_file(runner, iid, "/var/log/whoami").exists(), what="the unit after the restart")
    assert host_file(runner, iid, "/var/log/boots").read_text().count("boot of") == 1  # user data ran once
    assert "starting enabled units" in (runner.base / iid / "console.log").read_text()


def test_a_boot_that_fails_is_reported_and_the_instance_terminated(make_runner, clients, caplog):
    caplog.set_level(logging.INFO, logger="infra.local.runner")
    runner, act = make_runner("#!/bin/bash\necho 'cannot find my config' >&2\nexit 1\n")
    (iid,) = act.launch(1)
    settle(runner, lambda: "BOOT FAILED" in console_of(runner, iid), what="the boot to fail")
    settle(runner, lambda: iid not in runner.instances, what="the failed instance to be terminated")
    (inst,) = app_instances(clients.ec2, runner.settings, include_terminated=True)
    assert inst.state in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED)
    assert inst.health == "boot failed: user data exited with 1"
    console = (runner.base / iid / "console.log").read_text()
    assert "cannot find my config" in console and "BOOT FAILED" in console
    assert f"instance {iid} FAILED: boot failed: user data exited with 1" in caplog.text


@pytest.mark.skipif(not FEATURES.memory_cgroup, reason="no memory cgroup here")
def test_a_process_past_the_instance_types_memory_is_oom_killed_and_reported(make_runner, clients, caplog):
    caplog.set_level(logging.INFO, logger="infra.local.runner")
    runner, act = make_runner(boot_script(HOG), instance_type="t3.nano")  # 512 MiB
    (iid,) = act.launch(1)
    settle(runner, lambda: iid in runner.instances and runner.instances[iid].oom_kills >= 1, timeout=30,
           what="an OOM kill")
    assert f"instance {iid}: OOM kill in its memory cgroup (limit 512 MiB" in caplog.text
    console = settle(runner, lambda: "demo.service: Main process exited, code=killed, status=9/KILL" in (
        text := (runner.base / iid / "console.log").read_text()) and text, what="the init to see the kill")
    assert "Out of memory: the kernel killed a process of this instance" in console
    (inst,) = app_instances(clients.ec2, runner.settings)
    assert inst.health.startswith("OOM kill x")
    (row,) = instance_rows([inst], {}, time.time())  # what the dashboard's instance table shows
    assert row["health"] == inst.health


def test_isolation_off_still_boots_and_says_what_is_off(make_runner):
    features, _ = detect_features("off", AMI)
    assert not (features.namespaces or features.memory_cgroup or features.run_as_user)
    summary = features.summary()
    assert "OFF: namespaces (IMGREC_LOCAL_ISOLATION=off); memory cgroup (IMGREC_LOCAL_ISOLATION=off)" in summary
    runner, act = make_runner(boot_script(WHOAMI), features=features)
    (iid,) = act.launch(1)
    found = settle(runner, lambda: host_file(runner, iid, "/var/log/whoami").exists()
                   and host_file(runner, iid, "/var/log/whoami").read_text(), what="the fallback boot")
    assert found == iid
    assert runner.instances[iid].group is None
    user_data = (runner.base / iid / "user-data").read_text()
    assert f"{runner.base / iid / 'root'}/etc/systemd/system/demo.service" in user_data  # paths moved, said so


def start_runner(settings, log_path: Path, **env) -> subprocess.Popen:
    """``python -m infra.local.runner`` in its own session (setsid), as `make run`'s children are."""
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([sys.executable, "-m", "infra.local.runner"], cwd=ROOT, env=child_env(settings, **env),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    return proc


def test_runner_process_says_once_which_isolation_is_off(stack, tmp_path):
    proc = start_runner(stack, tmp_path / "runner.log", IMGREC_LOCAL_ISOLATION="off")
    try:
        wait_for(lambda: "runner ready" in log_text(proc) or proc.poll() is not None, 30, what="runner start")
        assert log_text(proc).count("local instances: no isolation; OFF: namespaces (IMGREC_LOCAL_ISOLATION=off)") == 1
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["auto", "off"])
def test_real_boot_script_runs_the_worker_which_classifies_and_ctrl_c_leaves_nothing(stack, clients, tmp_path,
                                                                                     isolation):
    settings, _ = provision_stack(stack.replace(local_isolation=isolation), clients)
    proc = start_runner(settings, tmp_path / "runner.log")
    try:
        wait_for(lambda: "runner ready" in log_text(proc) or proc.poll() is not None, 30, what="runner start")
        launched = time.monotonic()
        (iid,) = Ec2Actuator(clients.ec2, settings).launch(1)
        ids = send_images(clients, settings, 3)
        results = collect_results(clients, settings, ids, 120)
        print(f"run_instances -> 3 images classified: {time.monotonic() - launched:.1f} s")
        assert set(results) == ids and all(r.ok for r in results.values())
        assert {r.worker for r in results.values()} == {iid}  # the worker knows its instance id (metadata)
        console = consoles_text(settings.data_dir)
        assert "imgrec: baked image" in console and "Started imgrec-worker.service" in console
        assert f"worker {iid} ready" in console
        pid_marker = f"imgrec-init-{proc.pid}-"
        assert local_processes(pid_marker)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0  # a bounded wait: a stop that hangs fails here
        assert not local_processes(pid_marker), "instance processes left behind"
        assert not host_mounts_mentioning(str(Path(settings.data_dir).resolve()))
        if HIERARCHY is not None:
            assert not HIERARCHY.runner_group(proc.pid).exists(), "memory cgroup left behind"
        assert "halted" in log_text(proc)
    finally:
        stop_process(proc)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_an_unbaked_instance_runs_the_real_install_path(stack, clients, tmp_path, caplog):
    """git fetch from a file:// clone of this checkout's committed HEAD, pip from the package registry."""
    caplog.set_level(logging.INFO, logger="infra.local.runner")
    repo = tmp_path / "repo.git"
    subprocess.run(["git", "clone", "--bare", "--quiet", str(ROOT), str(repo)], check=True)
    branch = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", branch], check=True, capture_output=True,
                          text=True).stdout.strip()
    # As deploy does: the stack (installing from the clone), then the model artifact into its bucket, fetched
    # and verified at boot: an unbaked image carries none (and the worker set has no torch to build one).
    # pip and the preload need more than a t3.micro's 1 GiB; on AWS the install adds swap there.
    settings, outputs = provision_stack(stack.replace(instance_type="t3.medium"), clients,
                                        RepoUrl=f"file://{repo}", RepoRef=branch)
    upload_artifact(settings, clients, outputs)
    imds = MetadataServer().start()
    runner = Runner(settings, clients.ec2, FEATURES, ami=LocalAmi.this_checkout(baked=False), hierarchy=HIERARCHY,
                    imds=imds)
    try:
        (iid,) = Ec2Actuator(clients.ec2, settings).launch(1)
        ids = send_images(clients, settings, 2)
        settle(runner, lambda: iid in runner.instances and runner.instances[iid].phase.value != "booting",
               timeout=2000, what="the install")
        console = (runner.base / iid / "console.log").read_text()
        assert runner.instances[iid].phase.value == "up", console[-4000:]
        results = {}
        deadline = time.monotonic() + 180
        while set(results) != ids and time.monotonic() < deadline:
            runner.tick()
            results.update(collect_results(clients, settings, ids, 2))
        assert set(results) == ids and {r.worker for r in results.values()} == {iid}
        src = host_file(runner, iid, "/opt/imgrec/src")
        assert not host_file(runner, iid, "/opt/imgrec/.baked").exists()
        # the install chowns /opt/imgrec to the imgrec user: git on the host needs safe.directory to read it
        assert subprocess.run(["git", "-c", "safe.directory=*", "-C", str(src), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip() == head
        assert host_file(runner, iid, "/opt/imgrec/venv/bin/python").exists()
        # The worker set has no torch: the model unit fetched the artifact from S3 and verified it.
        console = (runner.base / iid / "console.log").read_text()  # now, after the worker answered
        assert "imgrec-model.service: Main process exited, code=exited, status=0/SUCCESS" in console
        # Requires=/After=: the worker started once the artifact was in place, so it never crashed for want of it.
        assert console.index("Finished imgrec-model.service.") < console.index("Started imgrec-worker.service")
        assert "imgrec-worker.service: Main process exited" not in console
        assert re.search(r"model artifact /var/lib/imgrec/models/\S+ ok: sha256 [0-9a-f]{64}", console)
        assert "local image: python3 python3-venv python3-pip git present" in console
    finally:
        runner.stop_all(timeout=10)
        imds.stop()
        if HIERARCHY is not None:
            cgroups.remove_runner_group(HIERARCHY, os.getpid())


@pytest.mark.slow
def test_a_failed_boot_is_replaced_by_the_controller_and_no_work_is_lost(stack, clients, tmp_path):
    from tests.procs import start_module

    marker = tmp_path / "first-boot-failed"  # the host's /tmp: shared by every instance of this test
    settings, _ = provision_stack(stack, clients)
    script = template_user_data(clients.ec2, settings.launch_template).replace(
        "#!/bin/bash\n", f"#!/bin/bash\nif mkdir {marker} 2>/dev/null; then echo 'simulated failure'; exit 1; fi\n", 1)
    profile = clients.iam.get_instance_profile(InstanceProfileName=f"{stack.prefix}-app-role")["InstanceProfile"]
    settings = settings.replace(launch_template=launch_template(clients.ec2, settings, f"{stack.prefix}-lt", script,
                                                                profile_arn=profile["Arn"]))
    ids = send_images(clients, settings, 5)  # waiting while the first instance fails
    runner = start_runner(settings, tmp_path / "runner.log")
    ctl = start_module("controller", settings, log_path=tmp_path / "controller.log")
    try:
        results = collect_results(clients, settings, ids, 180)
        assert set(results) == ids and all(r.ok for r in results.values()), log_text(runner)[-3000:]
        fleet = app_instances(clients.ec2, settings, include_terminated=True)
        failed = [i for i in fleet if i.health == "boot failed: user data exited with 1"]
        assert len(failed) == 1 and failed[0].state in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED)
        assert {r.worker for r in results.values()} <= {i.id for i in fleet} - {failed[0].id}
        assert f"instance {failed[0].id} FAILED: boot failed" in log_text(runner)
        assert log_text(ctl).count("action=launch") >= 2  # the replacement
    finally:
        stop_process(ctl)
        os.killpg(runner.pid, signal.SIGINT)
        stop_process(runner, timeout=15)
