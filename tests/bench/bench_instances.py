"""Local instances: boot latency, a 1 -> 19 -> 1 burst with every instance booted from its user data, Ctrl-C.

Prints, from one run on this machine:

1. ``run_instances`` -> the first image classified on that instance (a baked local
   instance: user data, init, the worker unit's start, the worker's first receive),
   median of ``--launches`` launches, each on a fresh instance;
2. a ``--burst``-image burst of the sample dataset through ``python -m infra up``:
   answered, fleet peak and return to min, how many instances booted from their
   user data, and the peak sum of PSS over every process of the stack;
3. Ctrl-C of the stack (SIGINT to its process group): seconds until it exited, and
   processes, mounts and memory cgroups left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The README's convention: the dataset beside the checkout (../shared/datasets/...).
DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-sample-200"
LAUNCH_GOAL_S = 3.0
PSS_GOAL_MB = 3 * 1024
CTRL_C_GOAL_S = 10.0


def stamps(console: str) -> tuple[float | None, float | None]:
    """When the init started the worker unit, and when the worker said ready (epoch seconds)."""
    from datetime import datetime

    unit = re.search(r"^(\S+) init: Started imgrec-worker\.service", console, re.M)
    ready = re.search(r"^(\S+ \S+) INFO app_tier\.worker: worker \S+ ready", console, re.M)
    return (datetime.strptime(unit.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp() if unit else None,
            datetime.strptime(ready.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if ready else None)


def launch_latency(launches: int, tmp: Path) -> list[dict]:
    """Seconds from run_instances to the first image classified on that instance, per launch."""
    from controller.actuator import Ec2Actuator
    from infra.clients import Clients
    from infra.config import Settings
    from infra.local.ami import ROOT, ensure_launch_template
    from infra.local.moto_server import MotoServer, free_port
    from infra.local.runner import consoles_text
    from infra.observe import app_instances
    from infra.provision import provision
    from tests.localinst import collect_results, send_images

    out = []
    with MotoServer(port=free_port()) as moto:
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix="bench", data_dir=str(tmp / "data"),
                                     receive_wait_s=20)
        clients = Clients(settings)
        provision(settings, clients)
        settings = settings.replace(launch_template=ensure_launch_template(clients.ec2, settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGREC_")}
        env.update(settings.to_env(), AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        log = open(tmp / "runner.log", "ab")  # noqa: SIM115
        runner = subprocess.Popen([sys.executable, "-m", "infra.local.runner"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while "runner ready" not in (tmp / "runner.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            act = Ec2Actuator(clients.ec2, settings)
            for n in range(launches):
                want = send_images(clients, settings, 1, start=n)  # waiting before the instance exists
                t0 = time.time()
                (iid,) = act.launch(1)
                results = collect_results(clients, settings, want, 180)
                (result,) = results.values()
                console = (Path(settings.data_dir) / "instances" / iid / "console.log").read_text()
                unit_at, ready_at = stamps(console)
                out.append({"instance": iid, "seconds": result.done_at - t0, "worker": result.worker,
                            "booted_from_user_data": "Started imgrec-worker.service" in console,
                            "unit_s": unit_at - t0 if unit_at else float("nan"),
                            "ready_s": ready_at - t0 if ready_at else float("nan")})
                print(f"    launch {n + 1}: {iid} worker unit started {out[-1]['unit_s']:.2f} s, worker ready "
                      f"{out[-1]['ready_s']:.2f} s, first image {out[-1]['seconds']:.2f} s (on {result.worker})",
                      flush=True)
                act.remove([iid])
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and ("instance halted" not in console
                                                       or any(i.id == iid for i in app_instances(clients.ec2, settings))):
                    time.sleep(0.2)
                    console = (Path(settings.data_dir) / "instances" / iid / "console.log").read_text()
        finally:
            runner.send_signal(2)
            runner.wait(30)
            (tmp / "consoles.txt").write_text(consoles_text(settings.data_dir))
    return out


class RoleMemory(threading.Thread):
    """Sums PSS over the stack's processes every second, by role; keeps the breakdown at the peak."""

    def __init__(self, processes_fn):
        super().__init__(daemon=True)
        self._fn, self._halt = processes_fn, threading.Event()
        self.peak_mb, self.peak_by_role, self.peak_count = 0.0, {}, 0

    def run(self) -> None:
        from tests.reliability.memwatch import role, rollup

        while not self._halt.wait(1.0):
            by_role: dict[str, list[float]] = {}
            for proc in self._fn():
                try:
                    name = role(proc)
                except Exception:  # noqa: BLE001 - a process that just exited
                    continue
                mem = rollup(proc.pid)
                if mem is not None:
                    by_role.setdefault(name, []).append(mem[1])
            total = sum(sum(v) for v in by_role.values())
            if total > self.peak_mb:
                self.peak_mb, self.peak_by_role = total, by_role
                self.peak_count = sum(len(v) for v in by_role.values())

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def breakdown(self) -> str:
        return "; ".join(f"{name} {len(v)} x {sum(v) / len(v):.0f} = {sum(v):.0f}"
                         for name, v in sorted(self.peak_by_role.items(), key=lambda kv: -sum(kv[1])))


def burst(dataset: Path, count: int, tmp: Path) -> dict:
    from infra.clients import Clients
    from infra.local import cgroups
    from infra.local.runner import consoles_text
    from infra.local.stack import StackProcess
    from infra.observe import app_instances
    from tests.localinst import host_mounts_mentioning
    from workload import WorkloadConfig, run_workload, summary_text

    # The course's rule at 1-19, so the burst boots the full fleet this bench measures (the default work profile
    # keeps a 200-image burst on one instance here: tests/bench/bench_scaling.py).
    stack = StackProcess(tmp / "stack", IMGREC_SCALING="course", IMGREC_MIN_INSTANCES="1",
                         IMGREC_MAX_INSTANCES="19").start(timeout=180)
    try:
        memory = RoleMemory(stack.processes)
        memory.start()
        result = run_workload(WorkloadConfig(
            url=stack.url, image_folder=dataset, prediction_file=dataset / "labels.csv", num_request=count,
            monitor=True, monitor_png=tmp / "timeline.png", rest_timeout_s=180, settings=stack.settings,
            progress=False))
        memory.stop()
        launched = app_instances(Clients(stack.settings).ec2, stack.settings, include_terminated=True)
        consoles = consoles_text(stack.data_dir)
        booted = consoles.count("imgrec: app services started: imgrec-worker.service")
        runner = next(p for p in stack.processes() if "infra.local.runner" in " ".join(p.cmdline()))
    finally:
        elapsed = stack.stop()
    hierarchy, _ = cgroups.Hierarchy.detect()
    return {
        "summary": summary_text(result), "result": result, "peak_pss_mb": memory.peak_mb,
        "breakdown": memory.breakdown(),
        "peak_processes": memory.peak_count, "launched": len(launched), "booted": booted, "ctrl_c_s": elapsed,
        "leftovers": stack.leftovers, "mounts": host_mounts_mentioning(str(stack.data_dir.resolve())),
        "cgroup_left": bool(hierarchy and hierarchy.runner_group(runner.pid).exists()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_instances", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--skip-burst", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.skip_burst and not (args.dataset / "labels.csv").exists():
        print(f"bench: dataset not found at {args.dataset} (pass --dataset)", file=sys.stderr)
        return 2
    verdict = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="imgrec-bench-inst-") as tmp:
        tmp = Path(tmp)
        (tmp / "launch").mkdir()
        print(f"1/2 run_instances -> first image classified, {args.launches} launches …", flush=True)
        launches = launch_latency(args.launches, tmp / "launch")
        median = statistics.median(x["seconds"] for x in launches)
        each = ", ".join(f"{x['seconds']:.2f}" for x in launches)
        unit_med = statistics.median(x["unit_s"] for x in launches)
        ready_med = statistics.median(x["ready_s"] for x in launches)
        lines = ["", "==== imgrec local instances (one run, this machine) ====",
                 f"launch -> first image    median {median:.2f} s over {len(launches)} launches "
                 f"({each}); goal <= {LAUNCH_GOAL_S:.0f} s: "
                 f"{verdict(median <= LAUNCH_GOAL_S)}",
                 f"                         of which: worker unit started (user data + init) median {unit_med:.2f} s, "
                 f"worker ready median {ready_med:.2f} s",
                 f"                         booted from user data: "
                 f"{sum(x['booted_from_user_data'] for x in launches)}/{len(launches)}; answered by that instance: "
                 f"{sum(x['worker'] == x['instance'] for x in launches)}/{len(launches)}"]
        if not args.skip_burst:
            (tmp / "burst").mkdir()
            print(f"2/2 {args.burst}-image burst through the local stack …", flush=True)
            b = burst(args.dataset, args.burst, tmp / "burst")
            r = b["result"]
            print(b["summary"])
            lines += [
                f"burst                    {r.succeeded}/{r.total} answered, {r.correct} correct; fleet peak "
                f"{r.fleet.peak} at {r.fleet.peak_t_s or 0:.1f} s, back at min at "
                f"{r.fleet.back_at_min_t_s or float('nan'):.1f} s",
                f"                         {b['launched']} instances launched, {b['booted']} booted from their "
                f"user data",
                f"peak memory, all procs   {b['peak_pss_mb']:.0f} MB PSS ({b['peak_processes']} processes); goal <= "
                f"{PSS_GOAL_MB} MB: {verdict(b['peak_pss_mb'] <= PSS_GOAL_MB)}",
                f"  at the peak (MB PSS)   {b['breakdown']}",
                f"Ctrl-C                   {b['ctrl_c_s']:.1f} s; left behind: {len(b['leftovers'])} processes, "
                f"{len(b['mounts'])} mounts, {'a' if b['cgroup_left'] else 'no'} memory cgroup; goal <= "
                f"{CTRL_C_GOAL_S:.0f} s: {verdict(b['ctrl_c_s'] <= CTRL_C_GOAL_S and not b['leftovers'])}",
            ]
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
