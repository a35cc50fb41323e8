"""`python -m controller.simulate`: the real scaling policy against a model of AWS (or of this machine).

Runs ``controller/policy.py`` (through ``controller/brain.py``, as the controller does) in the
discrete-event model of ``controller/simmodel.py`` for each workload (bursts of 100, 1k, 10k and
100k images, a Poisson stream, the course's 100 requests) and each policy: the default (``work``),
the ``course`` profile, today's rule (the course rule at 1-19 instances, the default before
issue 19) and fixed fleets. A fixed fleet of N runs on the same controller, lags and billing: N
instances while the queue holds work (launched when the controller sees it), back to one a
window after it is empty and idle. Prints drain time, p50/p95 latency, launches, peak, billed
instance-seconds and cost, then the issue's targets.

The AWS figures (``AWS``), each with its source:

- worker rate 27.6 images/s: one ``python -m app_tier`` worker on one core (README "Runtimes",
  ``tests/bench/bench_runtime.py``);
- launch to worker ready, median 32 s: RunInstances 1.5 s + pending to running 4.9 s + running to
  SSH 22.8 s (Colin Percival's ec2-boot-bench, medians of 9 launches,
  https://www.daemonology.net/blog/2021-08-12-EC2-boot-time-benchmarking.html; a 2025 run of the same
  steps measured 25.8 s on average, https://github.com/brevdev/ec2-coldboot-research) plus the
  worker's start to first batch (1.8 s, README "Runtimes"); lognormal spread 0.15 (assumed);
- billing: per second, 60 s minimum, from 'running'
  (https://aws.amazon.com/about-aws/whats-new/2017/10/announcing-amazon-ec2-per-second-billing/);
  price from ``infra/prices.py``;
- queue counts: a snapshot refreshed every 60 s, AWS's worst case ("may not achieve consistency
  until at least 1 minute after the producers stop sending messages",
  https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueAttributes.html);
- EC2 describe lag 2 s and CloudWatch ingest 2 s: assumed (AWS documents eventual consistency
  without a figure).

``--world local`` models this machine instead (shared-CPU mode, the strict emulation's
default lags); ``tests/bench/bench_simulate.py`` checks it against the real local stack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from dataclasses import asdict, replace

from controller.brain import Brain
from controller.policy import Decision, Observation, PolicySettings, PolicyState, Profile, decide
from controller.simmodel import Result, Simulation, World, with_policy
from infra.config import PROFILE_DEFAULTS, Settings

AWS = World(name="aws", rate=27.6, boot_median_s=32.0, boot_sigma=0.15, pending_s=6.4, billing_minimum_s=60.0,
            count_lag_s=60.0, ec2_lag_s=2.0, ingest_s=2.0)
# This machine, measured (README "Performance" and tests/bench): 2 cores shared by every instance, the
# emulated AWS and the web tier; 47 ms of CPU per image over every process at one instance (issue 19's
# measurement); a worker's own ceiling 37 images per CPU-second (README "Runtimes"); an instance boot 0.6
# CPU-s (six at once, tests/bench/bench_simulate.py) and 1.6-3.5 s from run_instances to ready with the
# 1 s EC2 lag, depending on the machine's load; the strict emulation's default lags (1 s).
LOCAL = World(name="local", rate=37.0, boot_median_s=2.5, boot_sigma=0.2, pending_s=0.2, billing_minimum_s=60.0,
              count_lag_s=1.0, ec2_lag_s=1.0, ingest_s=1.0, cores=float(os.cpu_count() or 2), cpu_per_image=0.047,
              boot_cpu_s=0.6, idle_cpu=0.02)
WORLDS = {"aws": AWS, "local": LOCAL}
BURSTS = (100, 1_000, 10_000, 100_000)
POISSON_RATE = 40.0  # images/s
POISSON_S = 600.0
FIXED = (1, 2, 4, 8, 19)
DRAIN_GOAL, SECONDS_GOAL = 1.2, 1.5
SEED = 19


# ---------------------------------------------------------------- policies

def settings_for(profile: str, **overrides) -> PolicySettings:
    """A profile's policy settings as `IMGREC_SCALING=<profile>` with nothing else set gives them."""
    return PolicySettings.from_settings(Settings.from_env({}, scaling=profile, **overrides))


def fixed_decide(n: int):
    """N instances from the moment a backlog is seen until the queue is seen empty and the fleet has done
    nothing for a measured window, else the at-rest one: the course rule made to want N."""
    def decide_fixed(obs: Observation, state: PolicyState, cfg: PolicySettings) -> Decision:
        busy = obs.facts is not None and obs.facts.recent > 0
        working = obs.backlog > 0 or (busy and state.last_desired == cfg.clamp(n))
        return decide(replace(obs, visible=n if working else 0, in_flight=0), state, cfg)
    return decide_fixed


def policies(world: World, fixed: tuple[int, ...] = FIXED) -> dict[str, tuple[PolicySettings, object, int]]:
    """name -> (policy settings, decide function, at-rest fleet)."""
    work = with_policy(world, settings_for("work"))
    course = with_policy(world, settings_for("course"))
    today = with_policy(world, settings_for("course", min_instances=1, max_instances=19))
    out = {"work (default)": (work, decide, work.min_instances),
           "course": (course, decide, course.min_instances),
           "today": (today, decide, today.min_instances)}
    for n in fixed:
        cfg = PolicySettings(min_instances=1, max_instances=max(1, n), target_backlog_per_instance=1,
                             scale_in_window_s=PROFILE_DEFAULTS["course"]["scale_in_window_s"],
                             profile=Profile.COURSE, billing_minimum_s=world.billing_minimum_s)
        out[f"fixed {n}"] = (cfg, fixed_decide(n), 1)
    return out


# ---------------------------------------------------------------- workloads

def burst(n: int) -> list[float]:
    return [0.0] * n


def poisson(rate: float, seconds: float, seed: int) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        out.append(t)


def workloads(seed: int = SEED) -> dict[str, list[float]]:
    out = {f"burst {n:,}": burst(n) for n in BURSTS}
    out[f"poisson {POISSON_RATE:g}/s {POISSON_S:g} s"] = poisson(POISSON_RATE, POISSON_S, seed)
    out["course 100"] = burst(100)
    return out


def simulate(world: World, name: str, policy: tuple[PolicySettings, object, int], arrivals: list[float],
             workload: str = "", seed: int = SEED) -> Result:
    cfg, decide_fn, at_rest = policy
    brain = Brain(cfg, decide=decide_fn)
    horizon = (arrivals[-1] if arrivals else 0.0) + 3600.0
    return Simulation(world, brain, arrivals, at_rest=at_rest, seed=seed, horizon_s=horizon,
                      policy_name=name, workload_name=workload).run()


# ---------------------------------------------------------------- report

HEADER = (f"{'policy':<16} {'drain s':>9} {'p50 s':>7} {'p95 s':>7} {'launches':>8} {'peak':>5} "
          f"{'inst-s':>8} {'cost $':>8} {'rest s':>7}")


def row(r: Result) -> str:
    cost = "n/a" if r.usd is None else f"{r.usd:.4f}"
    rest = "-" if r.rest_after_s is None else f"{r.rest_after_s:.1f}"
    unanswered = f"  ({r.unanswered} unanswered)" if r.unanswered else ""
    return (f"{r.policy:<16} {r.drain_s:9.1f} {r.p50_s:7.1f} {r.p95_s:7.1f} {r.launches:8d} {r.peak:5d} "
            f"{r.instance_s:8.0f} {cost:>8} {rest:>7}{unanswered}")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def targets(world: World, results: dict[str, dict[str, Result]], latency_target_s: float) -> list[str]:
    """The issue's simulator targets, one line each."""
    lines = []
    for workload, by_policy in results.items():
        work = by_policy.get("work (default)")
        fixed = {p: r for p, r in by_policy.items() if p.startswith("fixed")}
        course = by_policy.get("course")
        if workload.startswith("course") and course is not None and world.count_lag_s <= 10:
            # The grader's window (10 s) is shorter than AWS's worst-case count lag: judged where the lags are short.
            rest = course.rest_after_s
            ok = course.peak == 15 and rest is not None and rest <= 10
            lines.append(f"{workload:<24} course profile peaks at {course.peak} (goal 15), back to 0 "
                         f"{'never' if rest is None else f'{rest:.1f} s'} after the last answer (goal <= 10 s: "
                         f"{verdict(ok)})")
        if work is None or not fixed:
            continue
        if workload.startswith("burst"):
            best_name, best = min(fixed.items(), key=lambda kv: (kv[1].drain_s, kv[1].instance_s))
            drain, secs = work.drain_s / best.drain_s, work.instance_s / best.instance_s
            lines.append(f"{workload:<24} default drains in {drain:.2f}x the best fixed fleet's time ({best_name}; "
                         f"goal <= {DRAIN_GOAL}: {verdict(drain <= DRAIN_GOAL)}), {secs:.2f}x its instance-seconds "
                         f"(goal <= {SECONDS_GOAL}: {verdict(secs <= SECONDS_GOAL)})")
        elif workload.startswith("poisson"):
            meeting = {p: r for p, r in by_policy.items() if r.p95_s <= latency_target_s and not r.unanswered}
            least = min(meeting.items(), key=lambda kv: kv[1].instance_s)[0] if meeting else "none"
            ok = work.p95_s <= latency_target_s and least == "work (default)"
            lines.append(f"{workload:<24} default p95 {work.p95_s:.1f} s (target {latency_target_s:g} s), "
                         f"{work.instance_s:.0f} instance-s; least instance-s within the target: {least} "
                         f"({verdict(ok)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="aws")
    parser.add_argument("--workload", action="append", help="only these workloads (by name prefix: burst, poisson, "
                        "course); default all")
    parser.add_argument("--policy", action="append", help="only these policies (by name prefix)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--count-lag", type=float, help="queue count snapshot interval (s)")
    parser.add_argument("--boot", type=float, help="median launch-to-ready time (s)")
    parser.add_argument("--rate", type=float, help="images/s of one worker on its own core")
    parser.add_argument("--cpu-credits", choices=("unlimited", "standard"), default="unlimited",
                        help="t3 credits: `standard` starts an instance with none and throttles it to its baseline")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=0,
                        help="also check the targets for this many more seeds (boot times, phases, arrivals)")
    args = parser.parse_args(argv)

    world = WORLDS[args.world]
    if args.count_lag is not None:
        world = replace(world, count_lag_s=args.count_lag)
    if args.boot is not None:
        world = replace(world, boot_median_s=args.boot)
    if args.rate is not None:
        world = replace(world, rate=args.rate)
    if args.cpu_credits == "standard":
        world = replace(world, credits_start=0.0)
    chosen_policies = {k: v for k, v in policies(world).items()
                       if not args.policy or any(k.startswith(p) for p in args.policy)}
    chosen_workloads = {k: v for k, v in workloads(args.seed).items()
                        if not args.workload or any(k.startswith(w) for w in args.workload)}
    results: dict[str, dict[str, Result]] = {}
    for wname, arrivals in chosen_workloads.items():
        results[wname] = {}
        for pname, policy in chosen_policies.items():
            if wname.startswith("course") and pname not in ("course", "work (default)"):
                continue
            results[wname][pname] = simulate(world, pname, policy, arrivals, wname, args.seed)
    if args.json:
        json.dump({w: {p: {k: v for k, v in asdict(r).items() if k != "timeline"} for p, r in by.items()}
                   for w, by in results.items()}, sys.stdout, indent=1, default=_jsonable)
        print()
        return 0
    print(f"world {world.name}: worker {world.rate:g} images/s, boot median {world.boot_median_s:g} s, billing "
          f"minimum {world.billing_minimum_s:g} s, count lag {world.count_lag_s:g} s, EC2 lag {world.ec2_lag_s:g} s"
          + (f", {world.cores:g} shared cores" if world.cores else "")
          + (", t3 standard credits" if world.credits_start is not None else ""))
    for wname, by_policy in results.items():
        print(f"\n{wname} ({len(chosen_workloads[wname]):,} images)\n{HEADER}")
        for r in by_policy.values():
            print(row(r))
    latency_target = settings_for("work").latency_target_s
    lines = targets(world, results, latency_target)
    if lines:
        print(f"\ntargets ({world.name} timings, latency target {latency_target:g} s):")
        print("\n".join(lines))
    if args.seeds:
        robustness(world, chosen_policies, args.seed, args.seeds, latency_target)
    return 0


def robustness(world: World, chosen: dict, first: int, count: int, latency_target: float) -> None:
    """The targets again for other seeds: how much the verdicts hang on one draw."""
    met: dict[str, int] = {}
    for seed in range(first + 1, first + 1 + count):
        results = {w: {p: simulate(world, p, pol, arrivals, w, seed) for p, pol in chosen.items()
                       if p == "work (default)" or p.startswith("fixed")}
                   for w, arrivals in workloads(seed).items() if not w.startswith("course")}
        for line in targets(world, results, latency_target):
            name = line[:24].strip()
            met[name] = met.get(name, 0) + ("MISSED" not in line)
    print(f"\ntargets met over {count} more seeds ({first + 1}..{first + count}): "
          + ", ".join(f"{name} {n}/{count}" for name, n in met.items()))


def _jsonable(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
