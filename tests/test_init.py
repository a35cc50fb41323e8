"""The local init honours our units as systemd does: one real init per test, real processes, both modes.

Units here run /bin/sh so each semantic is checked in about a second; the real
worker unit is exercised by the runner, end-to-end and reliability tests.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from infra.local import isolation, units
from infra.local.units import parse_env_file, parse_timespan, parse_unit, should_restart, start_allowed
from infra.userdata import Unit
from infra.userdata import unit as render_unit
from tests.helpers import stays_true
from tests.localinst import MODES, NAMESPACES, InitUnderTest, mode_param

PARAMS = [mode_param(m) for m in MODES]


def boot_with(unit_name: str, unit_text: str, extra: str = "") -> str:
    """User data that installs one unit (and an env file) and enables it, as our boot script does."""
    return f"""#!/bin/bash
set -euo pipefail
mkdir -p /etc/imgrec /var/lib/imgrec
cat > /etc/imgrec/test.env <<'EOF'
# a comment
GREETING="hello \\"quoted\\" world"
PLAIN=plain
EOF
cat > /etc/systemd/system/{unit_name} <<'EOF'
{unit_text}
EOF
{extra}
systemctl daemon-reload
systemctl enable --now {unit_name}
"""


@pytest.fixture
def instances(tmp_path):
    made: list[InitUnderTest] = []

    def make(user_data: str, **kw) -> InitUnderTest:
        made.append(InitUnderTest(tmp_path, user_data, **kw))
        return made[-1]

    yield make
    for inst in made:
        inst.kill()


# ------------------------------------------------------------------ pure rules, table-driven

@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("5s", 5.0), ("1min 30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("infinity", float("inf")),
])
def test_timespans(text, seconds):
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize(("policy", "code", "sig", "timed_out", "restart"), [
    ("on-failure", 1, None, False, True), ("on-failure", 0, None, False, False),
    ("on-failure", None, signal.SIGKILL, False, True), ("on-failure", None, signal.SIGTERM, False, False),
    ("on-failure", None, signal.SIGSEGV, False, True), ("no", 1, None, False, False), ("always", 0, None, False, True),
    ("on-success", 0, None, False, True), ("on-abnormal", 1, None, False, False),
    ("on-abnormal", None, signal.SIGKILL, False, True),
    # a start that timed out, then ended by KillSignal (a clean signal) or SIGKILL: systemd's Timeout row
    ("always", None, signal.SIGTERM, True, True), ("on-failure", None, signal.SIGTERM, True, True),
    ("on-abnormal", None, signal.SIGTERM, True, True), ("on-success", None, signal.SIGTERM, True, False),
    ("on-abort", None, signal.SIGKILL, True, False), ("no", None, signal.SIGKILL, True, False),
])
def test_restart_policy(policy, code, sig, timed_out, restart):
    assert should_restart(policy, code, sig, timed_out=timed_out) is restart


@pytest.mark.parametrize(("starts", "allowed"), [
    ([], True), ([1, 2, 3, 4], True), ([1, 2, 3, 4, 5], False), ([-20, -15, 2, 3, 4, 5], True),
])
def test_start_limit_is_five_in_ten_seconds(starts, allowed):
    assert start_allowed(starts, now=6.0, interval_s=10.0, burst=5) is allowed


def test_env_file_quoting():
    env = parse_env_file('# c\nA="x \\"y\\" z"\nB=plain\nC=\'single q\'\n\nD=""\n')
    assert env == {"A": 'x "y" z', "B": "plain", "C": "single q", "D": ""}


def test_our_worker_unit_parses_with_the_fields_we_rely_on(settings):
    unit = parse_unit("imgrec-worker.service", render_unit(Unit.WORKER, settings))
    assert unit.exec_start == ("/opt/imgrec/venv/bin/python", "-m", "app_tier")
    assert unit.user == "imgrec" and unit.environment_files == (("/etc/imgrec/imgrec.env", False),)
    assert unit.restart == "on-failure" and unit.restart_s == 5.0
    assert unit.kill_signal == signal.SIGTERM and unit.kill_mode == "mixed"
    assert unit.timeout_stop_s == settings.visibility_timeout_s + 30
    assert (unit.start_limit_interval_s, unit.start_limit_burst) == (10.0, 5)  # systemd's defaults


def test_our_model_unit_is_a_oneshot_the_worker_requires_and_follows(settings):
    worker = parse_unit("imgrec-worker.service", render_unit(Unit.WORKER, settings, after=(Unit.MODEL,)))
    model = parse_unit("imgrec-model.service", render_unit(Unit.MODEL, settings))
    assert (model.type, model.oneshot, model.remain_after_exit) == ("oneshot", True, True)
    assert worker.requires == worker.after == ("imgrec-model.service",)  # network-online.target is not a service
    assert (worker.type, worker.oneshot) == ("simple", False)


def test_every_directive_of_our_units_is_implemented_or_a_documented_no_op(settings):
    """Our units use NoNewPrivileges, PrivateTmp, ProtectSystem, AmbientCapabilities and Wants too: each is either
    honoured or listed with what systemd would do (units.NO_OPS); none is silently ignored."""
    for name in (Unit.MODEL, Unit.WORKER, Unit.WEB, Unit.CONTROLLER):
        parsed = parse_unit(name.value, render_unit(name, settings))
        assert parsed.no_new_privileges is True
        assert set(parsed.no_ops) <= {"PrivateTmp=", "ProtectSystem=", "AmbientCapabilities="}
    model = parse_unit("imgrec-model.service", render_unit(Unit.MODEL, settings))
    assert model.timeout_start_s == 600.0  # a hung model fetch fails the boot instead of hanging it
    assert parse_unit("x.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n").timeout_start_s == float("inf")
    assert parse_unit("x.service", "[Service]\nType=oneshot\nExecStart=/bin/true\nTimeoutSec=0\n").timeout_start_s \
        == float("inf")  # systemd: 0 disables it


@pytest.mark.parametrize(("text", "error"), [
    ("Type=forking", "Type=forking is not one of"),
    ("Type=oneshot\nRemainAfterExit=maybe", "not a boolean"),
    ("ExecStartPre=/bin/true", r"\[Service\] ExecStartPre= is neither implemented by the local init nor a documented"),
    ("MemoryMax=1G", "MemoryMax= is neither implemented"),
    ("[Timer]\nOnCalendar=daily", r"section \[Timer\] is not understood"),
])
def test_unit_fields_we_cannot_honour_are_refused(text, error):
    with pytest.raises(units.UnitError, match=error):
        parse_unit("x.service", f"[Service]\nExecStart=/bin/true\n{text}\n")


def test_paths_are_rewritten_only_where_they_are_instance_paths(tmp_path):
    text = "cat /etc/imgrec/imgrec.env /var/log/x.log /opt/imgrec/src /etc/imgrecs /usr/var/log '/var/lib/imgrec'"
    out = isolation.rewrite_paths(text, tmp_path)
    assert out == (f"cat {tmp_path}/etc/imgrec/imgrec.env {tmp_path}/var/log/x.log {tmp_path}/opt/imgrec/src "
                   f"/etc/imgrecs /usr/var/log '{tmp_path}/var/lib/imgrec'")


@pytest.mark.parametrize(("argv", "expanded"), [
    (["fetch", "${IMGREC_MODEL_URI}"], ["fetch", "s3://b/models/m/"]),  # our model unit's ExecStart
    (["x", "$IMGREC_MODEL_URI"], ["x", "s3://b/models/m/"]),
    (["x", "$WORDS"], ["x", "two", "words"]),  # a whole-word $NAME splits at whitespace
    (["sh", "-c", "echo $IMGREC_MODEL|x"], ["sh", "-c", "echo $IMGREC_MODEL|x"]),  # part of a word: the shell's
    (["x", "pre-${IMGREC_MODEL}-post"], ["x", "pre-m-post"]),
    (["x", "${UNSET}"], ["x", ""]),  # systemd: an unset variable is empty
    (["sh", "-c", "echo $(pwd)"], ["sh", "-c", "echo $(pwd)"]),  # not a variable reference
])
def test_exec_start_substitutes_the_units_environment(argv, expanded):
    env = {"IMGREC_MODEL_URI": "s3://b/models/m/", "IMGREC_MODEL": "m", "WORDS": "two words"}
    assert units.expand_command(argv, env) == expanded


# ------------------------------------------------------------------ the init, real processes

@pytest.mark.parametrize("mode", PARAMS)
def test_enable_now_starts_the_unit_with_its_environment_file_and_working_directory(instances, mode):
    unit = """[Service]
EnvironmentFile=/etc/imgrec/test.env
EnvironmentFile=-/etc/imgrec/missing.env
WorkingDirectory=/var/lib/imgrec
ExecStart=/bin/sh -c 'echo "$GREETING|$PLAIN|$(pwd)|$IMGREC_INIT_SOCKET" > /var/log/demo.out; exec sleep 60'
"""
    inst = instances(boot_with("demo.service", unit), mode=mode)
    assert inst.booted()["boot"] == "ok", inst.console()
    out = inst.wait(lambda: inst.path("/var/log/demo.out").exists() and inst.path("/var/log/demo.out").read_text(),
                    what="the unit's output")
    greeting, plain, cwd, _ = out.strip().split("|")
    assert (greeting, plain) == ('hello "quoted" world', "plain")
    assert cwd == ("/var/lib/imgrec" if mode == "namespaces" else str(inst.path("/var/lib/imgrec")))
    assert inst.systemctl("is-active", "demo").stdout.strip() == "active"
    assert inst.systemctl("is-enabled", "demo.service").returncode == 0
    assert "Started demo.service" in inst.console()


@pytest.mark.skipif(not NAMESPACES or os.geteuid() != 0, reason="User= needs root and the instance's own passwd")
def test_user_is_honoured_where_possible(instances):
    unit = "[Service]\nUser=imgrec\nExecStart=/bin/sh -c 'id -u > /var/lib/imgrec/uid; exec sleep 60'\n"
    inst = instances(boot_with("who.service", unit, "chown imgrec:imgrec /var/lib/imgrec"), mode="namespaces",
                     run_as_user=True)
    assert inst.booted()["boot"] == "ok", inst.console()
    uid = inst.wait(lambda: inst.path("/var/lib/imgrec/uid").exists() and inst.path("/var/lib/imgrec/uid").read_text(),
                    what="the unit's uid")
    assert int(uid) == isolation.SERVICE_UID


@pytest.mark.parametrize("mode", PARAMS)
def test_restart_on_failure_stops_at_systemd_default_start_limit(instances, mode):
    unit = "[Service]\nExecStart=/bin/sh -c 'echo start >> /var/log/starts; exit 3'\nRestart=on-failure\nRestartSec=0.1\n"
    inst = instances(boot_with("crash.service", unit), mode=mode)
    inst.booted()
    inst.wait(lambda: inst.unit("crash.service").get("state") == "failed", what="the start limit")
    assert inst.path("/var/log/starts").read_text().count("start") == 5  # StartLimitBurst=5 in 10 s
    assert "crash.service: Start request repeated too quickly." in inst.console()
    assert "Main process exited, code=exited, status=3/FAILURE" in inst.console()
    assert inst.unit("crash.service")["result"] == "start-limit-hit"
    assert inst.systemctl("is-failed", "crash").returncode == 0


@pytest.mark.parametrize("mode", PARAMS)
def test_a_killed_unit_restarts_after_restart_sec_and_a_clean_exit_does_not(instances, mode):
    sleeper = "[Service]\nExecStart=/bin/sleep 60\nRestart=on-failure\nRestartSec=1\n"
    inst = instances(boot_with("sleeper.service", sleeper), mode=mode)
    inst.booted()
    first = inst.wait(lambda: inst.unit("sleeper.service").get("pid"), what="the first start")
    host_pid = first if mode == "fallback" else _host_pid_of(inst, "sleep")
    killed_at = time.monotonic()
    os.kill(host_pid, signal.SIGKILL)
    inst.wait(lambda: inst.unit("sleeper.service").get("restarts") == 1
              and inst.unit("sleeper.service").get("state") == "active", what="the restart")
    assert time.monotonic() - killed_at >= 0.9  # RestartSec=1
    assert "sleeper.service: Main process exited, code=killed, status=9/KILL" in inst.console()

    (inst.path("/etc/systemd/system") / "once.service").write_text(
        "[Service]\nExecStart=/bin/true\nRestart=on-failure\nRestartSec=0.1\n")
    assert inst.systemctl("start", "once").returncode == 0
    inst.wait(lambda: inst.unit("once.service").get("state") == "inactive", what="a clean exit")
    stays_true(lambda: inst.unit("once.service")["restarts"] == 0, 0.5, what="no restart after a clean exit")


@pytest.mark.parametrize("mode", PARAMS)
def test_stop_sends_kill_signal_and_waits_for_the_exit(instances, mode):
    unit = ("[Service]\nKillSignal=SIGUSR1\nExecStart=/bin/sh -c 'trap \"echo usr1 > /var/log/sig; exit 0\" USR1; "
            "touch /var/log/trapped; while :; do sleep 0.1; done'\n")
    inst = instances(boot_with("trap.service", unit), mode=mode)
    inst.booted()
    inst.wait(lambda: inst.path("/var/log/trapped").exists(), what="sh to install its trap")
    out = inst.systemctl("stop", "trap.service")
    assert out.returncode == 0, out.stderr
    assert inst.path("/var/log/sig").read_text().strip() == "usr1"  # stop returned only after it handled the signal
    assert inst.unit("trap.service")["state"] == "inactive"


@pytest.mark.parametrize("mode", PARAMS)
def test_timeout_stop_sec_then_sigkill(instances, mode):
    unit = "[Service]\nTimeoutStopSec=1500ms\nExecStart=/bin/sh -c 'trap \"\" TERM; touch /var/log/trapped; while :; do sleep 0.1; done'\n"
    inst = instances(boot_with("stubborn.service", unit), mode=mode)
    inst.booted()
    inst.wait(lambda: inst.path("/var/log/trapped").exists(), what="sh to install its trap")
    started = time.monotonic()
    assert inst.systemctl("stop", "stubborn").returncode == 0
    took = time.monotonic() - started
    assert took >= 1.4, took  # its TimeoutStopSec (a mandated delay); the systemctl call itself is bounded
    assert "stubborn.service: State 'stop-sigterm' timed out. Killing." in inst.console()
    assert "code=killed, status=9/KILL" in inst.console()


@pytest.mark.parametrize("mode", PARAMS)
def test_kill_mode_mixed_sigkills_what_is_left_after_the_main_process(instances, mode):
    unit = ("[Service]\nKillMode=mixed\nExecStart=/bin/sh -c 'sleep 300 & trap \"exit 0\" TERM; "
            "echo $! > /var/log/child; while :; do sleep 0.1; done'\n")
    inst = instances(boot_with("mixed.service", unit), mode=mode)
    inst.booted()
    inst.wait(lambda: inst.path("/var/log/child").exists() and inst.path("/var/log/child").read_text().strip(),
              what="the child pid")
    child = _host_pid_of(inst, "sleep 300")  # the child file is written after the trap is installed
    assert inst.systemctl("stop", "mixed").returncode == 0
    inst.wait(lambda: not _alive(child), timeout=5, what="the unit's leftover child to be killed")


@pytest.mark.parametrize("mode", PARAMS)
def test_shutdown_stops_every_unit_with_the_same_semantics(instances, mode):
    polite = ("[Service]\nExecStart=/bin/sh -c 'trap \"echo term > /var/log/polite; exit 0\" TERM; "
              "touch /var/log/polite.trapped; while :; do sleep 0.1; done'\n")
    stubborn = ("[Service]\nTimeoutStopSec=1\nExecStart=/bin/sh -c 'trap \"\" TERM; touch /var/log/stubborn.trapped; "
                "while :; do sleep 0.1; done'\n")
    extra = f"cat > /etc/systemd/system/stubborn.service <<'EOF'\n{stubborn}EOF\nsystemctl enable --now stubborn"
    inst = instances(boot_with("polite.service", polite, extra), mode=mode)
    inst.booted()
    inst.wait(lambda: all(inst.unit(u).get("state") == "active" for u in ("polite.service", "stubborn.service")),
              what="both units")
    pids = [_host_pid_of(inst, "while")]
    inst.wait(lambda: all(inst.path(f"/var/log/{u}.trapped").exists() for u in ("polite", "stubborn")),
              what="both traps installed")
    took = inst.shutdown()
    assert inst.proc.returncode == 0
    assert took >= 0.9, took  # the stubborn unit's TimeoutStopSec, then SIGKILL (a mandated delay)
    assert inst.path("/var/log/polite").read_text().strip() == "term"
    assert "stubborn.service: State 'stop-sigterm' timed out. Killing." in inst.console()
    assert "instance halted" in inst.console()
    assert not any(_alive(p) for p in pids)


@pytest.mark.parametrize("mode", PARAMS)
def test_user_data_that_exits_1_is_a_failed_boot(instances, mode):
    inst = instances("#!/bin/bash\necho about to fail\nexit 1\n", mode=mode)
    status = inst.booted()
    assert status["boot"] == "failed" and status["boot_exit"] == 1
    assert "user data finished: code=exited, status=1/FAILURE - BOOT FAILED" in inst.console()


@pytest.mark.skipif(not NAMESPACES, reason="namespaces unavailable")
def test_instances_do_not_see_each_others_files(instances):
    script = "#!/bin/bash\nset -e\necho {name} > /etc/imgrec/who\necho {name} > /var/log/who\nls /var/log > /var/lib/imgrec/logs\n"
    a = instances(script.format(name="a"), mode="namespaces")
    b = instances(script.format(name="b"), mode="namespaces")
    assert a.booted()["boot"] == "ok" and b.booted()["boot"] == "ok", a.console() + b.console()
    assert a.path("/etc/imgrec/who").read_text() == "a\n" and b.path("/etc/imgrec/who").read_text() == "b\n"
    assert a.path("/var/lib/imgrec/logs").read_text().split() == ["who"]  # its own, empty /var/log
    assert not os.path.exists("/etc/imgrec/who")  # the host's folder is only a mount point


def _host_pid_of(inst: InitUnderTest, needle: str) -> int:
    """The host pid of the instance's process whose command line contains ``needle``."""
    def find():
        for p in psutil.process_iter(["cmdline", "environ"]):
            try:
                if needle in " ".join(p.info["cmdline"] or []) and \
                        (p.info["environ"] or {}).get("IMGREC_INIT_SOCKET") == inst.env["IMGREC_INIT_SOCKET"]:
                    return p.pid
            except psutil.Error:
                continue
        return None

    return inst.wait(find, what=f"process {needle!r}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("mode", PARAMS)
def test_a_unit_that_cannot_start_fails_as_systemd_says(instances, mode):
    nouser = "[Service]\nUser=nosuchuser\nExecStart=/bin/sleep 60\nRestart=on-failure\nRestartSec=0.1\n"
    noenv = "[Service]\nEnvironmentFile=/etc/imgrec/absent.env\nExecStart=/bin/sleep 60\nRestart=on-failure\n"
    extra = f"cat > /etc/systemd/system/noenv.service <<'EOF'\n{noenv}EOF\nsystemctl start noenv || echo noenv refused"
    inst = instances(boot_with("nouser.service", nouser, extra), mode=mode, run_as_user=True)
    inst.booted()
    # User= unknown: the process fails before exec (217/USER), which Restart=on-failure retries up to the limit
    inst.wait(lambda: inst.unit("nouser.service").get("result") == "start-limit-hit", what="the start limit")
    assert inst.console().count("nouser.service: Main process exited, code=exited, status=217/USER") == 5
    # a missing EnvironmentFile: no process at all, result 'resources', no restart
    assert inst.unit("noenv.service") == {"state": "failed", "pid": 0, "restarts": 0, "result": "resources"}
    assert "noenv refused" in inst.console()


def _fetch_then_work(fetch_exit: int = 0, fetch: str = "") -> str:
    """A oneshot 'fetch' (1 s, then exit ``fetch_exit``; or the unit text ``fetch``) and a 'work' unit that
    Requires= and is After= it."""
    fetch = fetch or ("[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                      f"ExecStart=/bin/sh -c 'sleep 1; echo fetched > /var/log/fetch; exit {fetch_exit}'\n")
    work = ("[Unit]\nRequires=fetch.service\nAfter=fetch.service network-online.target\n[Service]\n"
            "ExecStart=/bin/sh -c 'cat /var/log/fetch > /var/log/work.out; exec sleep 60'\n")
    return f"""#!/bin/bash
cat > /etc/systemd/system/fetch.service <<'EOF'
{fetch}EOF
cat > /etc/systemd/system/work.service <<'EOF'
{work}EOF
systemctl daemon-reload
systemctl start work.service && echo "start returned 0 with fetch $(systemctl is-active fetch)" \
  || echo "start returned $?"
"""


@pytest.mark.parametrize("mode", PARAMS)
def test_a_unit_starts_only_after_the_oneshot_it_requires_has_finished(instances, mode):
    inst = instances(_fetch_then_work(0), mode=mode)
    assert inst.booted()["boot"] == "ok", inst.console()
    out = inst.wait(lambda: inst.path("/var/log/work.out").exists() and inst.path("/var/log/work.out").read_text(),
                    what="the work unit's output")
    assert out.strip() == "fetched"  # it ran after the oneshot's ExecStart had exited, not beside it
    console = inst.console()
    assert "start returned 0 with fetch active" in console  # systemctl start waited for the oneshot
    assert console.index("Finished fetch.service.") < console.index("Started work.service")
    assert inst.unit("fetch.service") == {"state": "active", "pid": 0, "restarts": 0, "result": "success"}
    assert inst.unit("work.service")["state"] == "active"
    assert inst.systemctl("stop", "fetch").returncode == 0  # RemainAfterExit: stopping it kills nothing
    assert inst.systemctl("is-active", "fetch").stdout.strip() == "inactive"  # the init's answer, not its status file


@pytest.mark.parametrize("mode", PARAMS)
def test_a_oneshot_past_its_timeout_start_sec_fails_and_so_does_what_requires_it(instances, mode):
    """A hung model fetch must not hang the boot for ever: TimeoutStartSec stops it and fails the unit."""
    fetch = ("[Service]\nType=oneshot\nRemainAfterExit=yes\nTimeoutStartSec=1\nTimeoutStopSec=1\n"
             "ExecStart=/bin/sh -c 'echo fetching; exec sleep 600'\n")
    started = time.monotonic()
    inst = instances(_fetch_then_work(fetch=fetch), mode=mode)
    assert inst.booted(timeout=30)["boot"] == "ok", inst.console()
    elapsed = time.monotonic() - started
    console = inst.console()
    assert "start returned 1" in console, console
    assert "fetch.service: start operation timed out after 1 s (TimeoutStartSec)" in console
    assert "fetch.service: Failed with result 'timeout'." in console and "Dependency failed for work.service" in console
    assert inst.unit("fetch.service")["result"] == "timeout" and inst.unit("fetch.service")["state"] == "failed"
    assert not inst.path("/var/log/work.out").exists()
    assert elapsed >= 1.0  # not before its TimeoutStartSec (a mandated delay)


@pytest.mark.parametrize("mode", PARAMS)
def test_a_unit_with_a_directive_the_init_does_not_know_is_refused_with_a_clear_line(instances, mode):
    unit = "[Service]\nExecStart=/bin/sleep 60\nExecStartPre=/bin/true\n"
    inst = instances(f"""#!/bin/bash
cat > /etc/systemd/system/odd.service <<'EOF'
{unit}EOF
systemctl daemon-reload
systemctl start odd.service && echo "start returned 0" || echo "start returned $?"
""", mode=mode)
    assert inst.booted()["boot"] == "ok", inst.console()
    console = inst.console()
    assert "odd.service: [Service] ExecStartPre= is neither implemented by the local init nor a documented no-op" \
        in console
    assert "start returned 5" in console and "Started odd.service" not in console


@pytest.mark.parametrize("mode", PARAMS)
def test_no_new_privileges_reaches_the_units_process(instances, mode):
    unit = ("[Service]\nNoNewPrivileges=yes\nPrivateTmp=yes\n"
            "ExecStart=/bin/sh -c 'grep NoNewPrivs /proc/self/status > /var/log/nnp; exec sleep 60'\n")
    inst = instances(boot_with("nnp.service", unit), mode=mode)
    assert inst.booted()["boot"] == "ok", inst.console()
    text = inst.wait(lambda: inst.path("/var/log/nnp").exists() and inst.path("/var/log/nnp").read_text(),
                     what="the unit's NoNewPrivs line")
    assert text.split() == ["NoNewPrivs:", "1"]
    assert "nnp.service: PrivateTmp= accepted and not enforced locally" in inst.console()


@pytest.mark.parametrize("mode", PARAMS)
def test_a_failed_oneshot_fails_the_unit_that_requires_it(instances, mode):
    inst = instances(_fetch_then_work(3), mode=mode)
    assert inst.booted()["boot"] == "ok", inst.console()
    console = inst.console()
    assert "start returned 1" in console, console
    assert "Failed to start fetch.service." in console and "Dependency failed for work.service" in console
    assert "Started work.service" not in console and not inst.path("/var/log/work.out").exists()
    assert inst.unit("fetch.service")["result"] == "exit-code"
    assert inst.unit("work.service") == {"state": "failed", "pid": 0, "restarts": 0, "result": "dependency"}
