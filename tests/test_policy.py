"""The scaling policy, exhaustively and without AWS: tables plus property-based runs, for both profiles.

The course profile (one instance per few messages) is checked against its rule; the work profile
(size by measured work) against hand-worked tables of drain times and launches."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.facts import Facts
from controller.policy import (
    Decision,
    Observation,
    PolicySettings,
    PolicyState,
    Profile,
    decide,
    drain_time,
    need_for,
    steady_need,
)
from infra.config import ConfigError, Settings

# The course rule at the mission's 1-19 (today's default before issue 19) and at the course's 0-15.
MISSION = PolicySettings(min_instances=1, max_instances=19, target_backlog_per_instance=5, scale_in_window_s=2.0)
GRADER = PolicySettings(min_instances=0, max_instances=15, target_backlog_per_instance=5, scale_in_window_s=2.0)


def run(cfg: PolicySettings, backlogs: list[int], dt: float = 1.0, start: float = 100.0) -> list[Decision]:
    """Feed one backlog per tick (``dt`` apart); the fleet follows the previous decision."""
    state, out, fleet = PolicyState(), [], cfg.min_instances
    for i, b in enumerate(backlogs):
        d = decide(Observation(visible=b, in_flight=0, running=fleet, now=start + i * dt), state, cfg)
        out.append(d)
        state, fleet = d.new_state, d.desired
    return out


def desired(cfg, backlogs, dt=1.0):
    return [d.desired for d in run(cfg, backlogs, dt)]


# ---------------------------------------------------------------- tables

@pytest.mark.parametrize("backlog, need", [
    (0, 1), (1, 1), (5, 1), (6, 2), (10, 2), (11, 3), (94, 19), (95, 19), (96, 19), (10_000, 19),
])
def test_need_is_ceil_backlog_over_target_within_mission_range(backlog, need):
    assert need_for(backlog, MISSION) == need


@pytest.mark.parametrize("backlog, need", [(0, 0), (1, 1), (5, 1), (6, 2), (74, 15), (75, 15), (100, 15)])
def test_need_with_min_zero(backlog, need):
    assert need_for(backlog, GRADER) == need


@pytest.mark.parametrize("cfg, backlogs, expected", [
    # scale-out at once, then down once the high need is a whole window (2 s) old
    (MISSION, [0, 40, 0, 0, 0, 0], [1, 8, 8, 1, 1, 1]),
    # the grader's burst: 15 at the peak, 0 one window after the last message
    (GRADER, [0, 100, 60, 20, 0, 0, 0], [0, 15, 15, 12, 4, 0, 0]),
    # wake from zero on the first message
    (GRADER, [0, 0, 1, 1], [0, 0, 1, 1]),
    # a steady backlog never moves the size
    (MISSION, [23] * 8, [5] * 8),
    # a spike inside the window keeps the size (no down-up-down)
    (MISSION, [30, 0, 30, 0, 30, 0, 0, 0], [6, 6, 6, 6, 6, 6, 1, 1]),
    # gradual drain steps down one window behind
    (MISSION, [50, 40, 30, 20, 10, 0, 0, 0], [10, 10, 8, 6, 4, 2, 1, 1]),
])
def test_decision_sequences(cfg, backlogs, expected):
    assert desired(cfg, backlogs) == expected


def test_in_flight_counts_as_backlog():
    d = decide(Observation(visible=3, in_flight=12, running=1, now=0.0), PolicyState(), MISSION)
    assert d.desired == 3 and d.need == 3


def test_zero_window_scales_in_on_the_next_tick():
    cfg = PolicySettings(0, 15, 5, 0.0)
    assert desired(cfg, [100, 0, 0]) == [15, 0, 0]


def test_restarted_controller_keeps_the_fleet_it_finds_for_one_window():
    state = PolicyState()
    d = decide(Observation(visible=0, in_flight=0, running=7, now=0.0), state, MISSION)
    assert d.desired == 7 and d.reason.startswith("start")
    d = decide(Observation(visible=0, in_flight=0, running=7, now=1.0), d.new_state, MISSION)
    assert d.desired == 7 and d.reason.startswith("hold")
    d = decide(Observation(visible=0, in_flight=0, running=7, now=2.0), d.new_state, MISSION)
    assert d.desired == 1 and d.reason.startswith("scale-in")


def test_reasons_name_the_rule():
    ds = run(GRADER, [0, 200, 0, 0, 0])
    assert ds[1].reason.startswith("scale-out") and "capped at max" in ds[1].reason
    assert ds[2].reason.startswith("hold")
    assert ds[3].reason.startswith("scale-in")
    assert ds[4].reason.startswith("steady")


def test_state_records_changes_and_low_since():
    ds = run(MISSION, [40, 40, 0, 0, 0])
    assert [d.desired for d in ds] == [8, 8, 8, 1, 1]
    assert ds[0].new_state.last_change_at == 100.0 and ds[2].new_state.last_change_at == 100.0
    assert ds[2].new_state.low_since == 102.0
    assert ds[3].new_state.low_since is None and ds[3].new_state.last_change_at == 103.0


def test_from_settings_and_validation():
    cfg = PolicySettings.from_settings(Settings.from_env({}, scaling="course"))
    assert (cfg.profile, cfg.min_instances, cfg.max_instances, cfg.target_backlog_per_instance,
            cfg.scale_in_window_s) == (Profile.COURSE, 0, 15, 5, 2.0)
    for bad in [(-1, 5, 5, 1.0), (3, 2, 5, 1.0), (0, 0, 5, 1.0), (1, 5, 0, 1.0), (1, 5, 5, -1.0)]:
        with pytest.raises(ValueError):
            PolicySettings(*bad)


@pytest.mark.parametrize("env, expected", [
    # (profile, min, max, window, latency target)
    ({}, ("work", 1, 19, 10.0, 45.0)),
    ({"IMGREC_SCALING": "course"}, ("course", 0, 15, 2.0, 45.0)),
    # explicit settings win over the profile's defaults, in either profile
    ({"IMGREC_SCALING": "course", "IMGREC_MAX_INSTANCES": "4"}, ("course", 0, 4, 2.0, 45.0)),
    ({"IMGREC_MIN_INSTANCES": "0", "IMGREC_SCALE_IN_WINDOW": "3", "IMGREC_LATENCY_TARGET": "120"},
     ("work", 0, 19, 3.0, 120.0)),
    ({"IMGREC_SCALING": "course", "IMGREC_MIN_INSTANCES": "2"}, ("course", 2, 15, 2.0, 45.0)),
])
def test_profiles_give_defaults_and_explicit_settings_win(env, expected):
    cfg = PolicySettings.from_settings(Settings.from_env(env))
    assert (cfg.profile, cfg.min_instances, cfg.max_instances, cfg.scale_in_window_s, cfg.latency_target_s) == expected


def test_changing_profile_moves_only_the_defaults():
    work = Settings.from_env({"IMGREC_MAX_INSTANCES": "7"})
    course = work.replace(scaling="course")
    assert (course.min_instances, course.max_instances, course.scale_in_window_s) == (0, 7, 2.0)
    assert course.replace(scaling="work").min_instances == 1
    with pytest.raises(ConfigError, match="IMGREC_SCALING"):
        Settings.from_env({"IMGREC_SCALING": "fast"})


# ---------------------------------------------------------------- properties

configs = st.builds(
    lambda lo, span, target, window: PolicySettings(lo, max(1, lo + span), target, window),
    st.integers(0, 5), st.integers(0, 20), st.integers(1, 20), st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
)
backlog_runs = st.lists(st.integers(0, 500), min_size=1, max_size=40)
steps = st.sampled_from([0.25, 0.5, 1.0])  # binary-exact, so window edges are exact


@settings(max_examples=300, deadline=None)
@given(cfg=configs, backlogs=backlog_runs, dt=steps)
def test_always_within_min_and_max_and_never_below_need(cfg, backlogs, dt):
    for b, d in zip(backlogs, run(cfg, backlogs, dt), strict=True):
        assert cfg.min_instances <= d.desired <= cfg.max_instances
        assert d.desired >= need_for(b, cfg)  # scale-out is never delayed


@settings(max_examples=300, deadline=None)
@given(cfg=configs, backlogs=backlog_runs, dt=steps)
def test_matches_reference_max_over_window(cfg, backlogs, dt):
    ds = run(cfg, backlogs, dt)
    for i, d in enumerate(ds):
        inside = [j for j in range(i + 1) if j == i or (i - j) * dt < cfg.scale_in_window_s - 1e-9]
        window = [need_for(backlogs[j], cfg) for j in inside]
        seed = [cfg.min_instances] if 0 in inside else []  # the fleet found at start
        assert d.desired == max(window + seed)


@settings(max_examples=300, deadline=None)
@given(cfg=configs, backlogs=backlog_runs, dt=steps)
def test_scale_in_only_after_need_stayed_low_for_the_window(cfg, backlogs, dt):
    ds = run(cfg, backlogs, dt)
    for i in range(1, len(ds)):
        if ds[i].desired < ds[i - 1].desired:
            # every need within the window ending now is at or below the new size
            for j in range(i + 1):
                if j == i or (i - j) * dt < cfg.scale_in_window_s - 1e-9:
                    assert need_for(backlogs[j], cfg) <= ds[i].desired


@settings(max_examples=200, deadline=None)
@given(cfg=configs, before=backlog_runs, steady=st.integers(0, 500), n=st.integers(1, 30), dt=steps)
def test_no_flapping_under_a_steady_backlog(cfg, before, steady, n, dt):
    ds = run(cfg, before + [steady] * n, dt)[len(before):]
    sizes = [d.desired for d in ds]
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False)), sizes  # only ever steps down
    settled = math.ceil(cfg.scale_in_window_s / dt) if cfg.scale_in_window_s else 0
    if n > settled:
        assert sizes[-1] == need_for(steady, cfg)


@settings(max_examples=300, deadline=None)
@given(cfg=configs, history=backlog_runs, a=st.integers(0, 500), b=st.integers(0, 500), dt=steps)
def test_monotone_in_backlog(cfg, history, a, b, dt):
    state = run(cfg, history, dt)[-1].new_state
    now = 100.0 + len(history) * dt
    lo, hi = sorted((a, b))
    d_lo = decide(Observation(lo, 0, running=1, now=now), state, cfg).desired
    d_hi = decide(Observation(hi, 0, running=1, now=now), state, cfg).desired
    assert d_lo <= d_hi


@settings(max_examples=200, deadline=None)
@given(history=backlog_runs, dt=steps)
def test_min_zero_wakes_on_first_message_and_reaches_zero_after_window(history, dt):
    cfg = GRADER
    d = run(cfg, history + [1], dt)[-1]
    assert d.desired >= 1
    quiet = math.ceil(cfg.scale_in_window_s / dt) + 1
    assert run(cfg, history + [0] * quiet, dt)[-1].desired == 0


@settings(max_examples=200, deadline=None)
@given(vis=st.integers(-5, 100), inflight=st.integers(-5, 100))
def test_negative_counts_are_ignored(vis, inflight):
    d = decide(Observation(vis, inflight, now=0.0), PolicyState(), MISSION)
    assert d.need == need_for(max(0, vis) + max(0, inflight), MISSION)


# ---------------------------------------------------------------- work profile

# AWS-like facts: a worker's 27.6 images/s on its own core (tests/bench/bench_runtime.py), 32 s from launch to a
# ready worker (controller/simulate.py cites it); the default latency target, 45 s.
WORK = PolicySettings(min_instances=1, max_instances=19, scale_in_window_s=10.0, profile=Profile.WORK,
                      latency_target_s=45.0)
EC2 = Facts(rate=27.6, boot_s=32.0, rate_measured=True, boot_measured=True)
LAPTOP = Facts(rate=35.0, boot_s=2.0, curve=((1, 35.0), (3, 36.0)), contention=1.0, rate_measured=True,
               boot_measured=True)


def held(active: int, at: float = 0.0) -> PolicyState:
    """The state of a controller that has wanted ``active`` instances since ``at``."""
    return PolicyState(last_desired=active, recent=((at, active),))


def replace_facts(**changes) -> Facts:
    return replace(EC2, **changes)


def obs_for(backlog: int, serving: int = 1, booting: tuple[float, ...] = (), facts: Facts = EC2, now: float = 0.0,
            prepaid: int = 0) -> Observation:
    return Observation(visible=backlog, in_flight=0, running=serving, pending=len(booting), serving=serving,
                       booting_ages=booting, prepaid=prepaid, facts=facts, now=now)


@pytest.mark.parametrize("backlog, serving, boot_left, capacity, arrival, expected", [
    (0, 1, [], 10, 0, 0.0),
    (100, 1, [], 10, 0, 10.0),
    (100, 0, [5], 10, 0, 15.0),  # nothing until the first instance is up
    (100, 1, [5], 10, 0, 7.5),  # 50 by 5 s, then 20/s
    (100, 1, [], 10, 10, math.inf),  # arrivals as fast as the fleet: never
    (100, 1, [5], 10, 10, 15.0),  # ... until a second instance helps
    (0, 1, [], 10, 20, math.inf),  # empty, but a stream the fleet cannot keep up with
])
def test_drain_time(backlog, serving, boot_left, capacity, arrival, expected):
    assert drain_time(backlog, serving, boot_left, lambda n: capacity * n, arrival) == pytest.approx(expected)


@pytest.mark.parametrize("why, obs, expected", [
    ("drains within the target (1000 / 27.6 = 36 s <= 45 s): no launch", obs_for(1_000), 1),
    ("a launch would be ready 32 s in, with 8 s of work left: it does not pay its minute", obs_for(1_300), 1),
    ("10k: no fleet meets 45 s; the smallest within 5 % of the fastest paying one (19 drains in 49 s)",
     obs_for(10_000), 17),
    ("100k: the same rule, every launch busy for minutes", obs_for(100_000), 18),
    ("instances already booting count: 16 more were launched 5 s ago", obs_for(10_000, booting=(5.0,) * 16), 17),
    ("instances that share a laptop's cores add nothing: no launch", obs_for(10_000, facts=LAPTOP), 1),
    ("a stream of 40/s needs two instances (with headroom)", obs_for(0, facts=replace_facts(arrival=40.0)), 2),
    ("a stream no fleet keeps up with: as many as still help", obs_for(0, facts=replace_facts(arrival=1e6)), 19),
    ("one booting instance is enough for a small backlog: nothing more", obs_for(500, booting=(10.0,)), 2),
])
def test_work_first_decisions(why, obs, expected):
    assert decide(obs, held(obs.active), WORK).desired == expected, why


@pytest.mark.parametrize("why, start, steps, expected", [
    # (active, backlog) per tick, 1 s apart; the window is 10 s
    ("idle surplus goes one window after the backlog is gone", 6, [(6, 0)] * 12, [6] * 10 + [1, 1]),
    ("busy instances stay while they work", 6, [(6, 5_000)] * 12, [6] * 12),
    ("a spike inside the window holds the size", 6, [(6, 0)] * 5 + [(6, 5_000)] + [(6, 0)] * 5, [6] * 11),
])
def test_work_scale_in_sequences(why, start, steps, expected):
    state, out = held(start), []
    for i, (active, backlog) in enumerate(steps):
        d = decide(obs_for(backlog, serving=active, now=float(i)), state, WORK)
        state = d.new_state
        out.append(d.desired)
    assert out == expected, why


def test_work_from_zero_wakes_for_a_few_messages():
    """Min 0: a launch that would work 1 s of its billed minute still happens when nothing else would drain."""
    cfg = replace(WORK, min_instances=0)
    assert decide(obs_for(3, serving=0), held(0), cfg).desired == 1
    assert decide(obs_for(0, serving=0), held(0), cfg).desired == 0


def test_work_keeps_instances_inside_their_paid_minute():
    d = decide(obs_for(0, serving=6, prepaid=4, now=100.0), held(6), WORK)
    assert d.desired == 4 and "paid first minute" in d.reason


def test_work_reasons_say_why_in_facts():
    d = decide(obs_for(10_000), held(1), WORK)
    assert d.reason.startswith("scale-out") and "target 45 s" in d.reason and "27.6/s each" in d.reason
    prior = decide(Observation(visible=10_000, in_flight=0, running=1, now=0.0), held(1), WORK)
    assert "(assumed)" in prior.reason  # no facts: the settings' estimates, and it says so


def test_steady_need_has_headroom_and_stops_where_nothing_helps():
    assert steady_need(replace_facts(arrival=0.0), WORK) == 0
    assert steady_need(replace_facts(arrival=27.0), WORK) == 2  # 27/0.9 = 30 > 27.6
    assert steady_need(replace_facts(arrival=50.0), WORK) == 3
    flat = Facts(rate=35.0, boot_s=2.0, contention=1.0, arrival=100.0)
    assert steady_need(flat, WORK) == 1  # one does what 19 do


@settings(max_examples=200, deadline=None)
@given(backlog=st.integers(0, 200_000), serving=st.integers(1, 19), rate=st.floats(1, 100),
       boot=st.floats(0, 120), contention=st.floats(0, 1), arrival=st.floats(0, 200))
def test_work_desired_is_within_bounds_and_never_below_what_serves(backlog, serving, rate, boot, contention, arrival):
    facts = Facts(rate=rate, boot_s=boot, contention=contention, arrival=arrival, rate_measured=True)
    d = decide(obs_for(backlog, serving=serving, facts=facts), held(serving), WORK)
    assert WORK.min_instances <= d.desired <= WORK.max_instances
    assert d.desired >= serving  # inside the window: scale-in waits


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 100_000), b=st.integers(0, 100_000))
def test_work_launches_monotone_in_backlog(a, b):
    lo, hi = sorted((a, b))
    d_lo = decide(obs_for(lo), held(1), WORK).desired
    d_hi = decide(obs_for(hi), held(1), WORK).desired
    assert d_lo <= d_hi
