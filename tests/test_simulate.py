"""The simulator (controller/simulate.py, controller/simmodel.py): deterministic, and the model behaves as
its parts say. Simulated time only: nothing here depends on how loaded the machine is."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller import simulate as sim
from controller.simmodel import World


def run(world: World, policy: str, arrivals: list[float], seed: int = 7):
    return sim.simulate(world, policy, sim.policies(world)[policy], arrivals, "test", seed)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    arrivals = sim.poisson(30.0, 120.0, seed=3)
    a, b = run(sim.AWS, "work (default)", arrivals), run(sim.AWS, "work (default)", arrivals)
    assert (a.drain_s, a.p95_s, a.launches, a.instance_s, a.timeline) == (b.drain_s, b.p95_s, b.launches,
                                                                          b.instance_s, b.timeline)
    c = run(sim.AWS, "work (default)", arrivals, seed=8)
    assert c.timeline != a.timeline
    assert sim.poisson(30.0, 120.0, seed=3) == arrivals != sim.poisson(30.0, 120.0, seed=4)


def test_one_warm_instance_drains_a_burst_at_its_rate():
    r = run(sim.AWS, "fixed 1", sim.burst(1_000))
    assert r.drain_s == pytest.approx(1_000 / sim.AWS.rate, rel=0.01)
    assert r.launches == 0 and r.peak == 1 and r.unanswered == 0
    assert r.instance_s == pytest.approx(r.drain_s)  # the warm instance, over the drain


def test_fixed_fleets_reach_their_size_and_are_billed_a_minute_at_least():
    r = run(sim.AWS, "fixed 4", sim.burst(10_000))
    assert r.peak == 4 and r.launches == 3
    assert r.instance_s >= r.drain_s + 3 * sim.AWS.billing_minimum_s


def test_the_work_policy_launches_nothing_a_burst_is_gone_before_it_boots():
    assert run(sim.AWS, "work (default)", sim.burst(1_000)).launches == 0


def test_the_work_policy_scales_out_for_a_large_burst_and_back_to_one():
    r = run(sim.AWS, "work (default)", sim.burst(100_000))
    assert 10 <= r.peak <= 19 and r.unanswered == 0
    assert r.timeline[-1][1] == 1 and r.rest_after_s is not None


def test_the_course_profile_on_this_machine_peaks_at_15_and_is_back_to_0_soon_after():
    r = run(sim.LOCAL, "course", sim.burst(100))
    assert r.peak == 15 and r.launches == 15
    assert r.rest_after_s is not None and r.rest_after_s < 10


def test_shared_cores_cap_the_fleet_and_boots_cost_cpu():
    two, eight = run(sim.LOCAL, "fixed 2", sim.burst(2_000)), run(sim.LOCAL, "fixed 8", sim.burst(2_000))
    assert eight.drain_s >= two.drain_s * 0.95  # more instances on the same two cores do not go faster
    aws_two, aws_eight = run(sim.AWS, "fixed 2", sim.burst(20_000)), run(sim.AWS, "fixed 8", sim.burst(20_000))
    assert aws_eight.drain_s < aws_two.drain_s * 0.6  # on EC2 each brings its own core


def test_t3_standard_credits_throttle_a_new_instance():
    standard = replace(sim.AWS, credits_start=0.0)
    unlimited, throttled = run(sim.AWS, "fixed 1", sim.burst(1_000)), run(standard, "fixed 1", sim.burst(1_000))
    assert throttled.drain_s == pytest.approx(unlimited.drain_s / standard.baseline_rate_factor, rel=0.05)


def test_latency_percentiles_of_a_burst():
    r = run(sim.AWS, "fixed 1", sim.burst(1_000))
    assert r.p50_s == pytest.approx(r.drain_s / 2, rel=0.05) and r.p95_s == pytest.approx(r.drain_s * 0.95, rel=0.05)


def test_the_command_line_prints_the_tables_and_the_targets(capsys):
    assert sim.main(["--workload", "burst 1,000", "--policy", "work", "--policy", "fixed"]) == 0
    out = capsys.readouterr().out
    assert "world aws: worker 27.6 images/s, boot median 32 s" in out
    assert "burst 1,000 (1,000 images)" in out and "fixed 19" in out and "work (default)" in out
    assert "targets (aws timings, latency target 45 s):" in out and "best fixed fleet" in out


def test_the_command_line_speaks_json(capsys):
    import json

    assert sim.main(["--world", "local", "--workload", "course", "--policy", "course", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["course 100"]["course"]["peak"] == 15
