"""What the controller measures about its fleet (controller/facts.py): plain data in, facts out, no AWS.

Each test feeds a Learner what the loop would read (a tick a second: queue counts and the running
instances; per-second images from CloudWatch; worker start times) and checks the facts it derives.
"""

from __future__ import annotations

import pytest

from controller.facts import Facts, Learner, fit_scaling

T0 = 1_700_000_000.0  # epoch seconds, as the loop passes them


def learner() -> Learner:
    return Learner(rate_estimate=25.0, boot_estimate=40.0)


def feed(lx: Learner, seconds: range, *, rate: float, backlog_at, running: list[tuple[str, float]],
         visible_at=None) -> None:
    """One tick a second, ``rate`` images done each second, then one metrics read covering them all."""
    per_second = {}
    for s in seconds:
        t = T0 + s
        b = backlog_at(s)
        lx.record_tick(t, b if visible_at is None else visible_at(s), b, running)
        per_second[int(t)] = rate
    lx.record_images(int(T0) + seconds.start, int(T0) + seconds.stop, per_second)
    lx.update(T0 + seconds.stop + 10)


@pytest.mark.parametrize("points, rate, contention", [
    ([(1, 30.0)], 30.0, 0.0),  # one instance measured: its rate; scaling assumed until shown otherwise
    ([(1, 30.0), (2, 60.0), (4, 120.0)], 30.0, 0.0),  # each instance adds its share: EC2
    ([(1, 35.0), (4, 35.0), (8, 35.0)], 35.0, 1.0),  # all share the same CPU: a laptop
    ([(7, 41.0)], 25.0, 0.54),  # one point above one instance: contention against the estimate
    ([], 25.0, 0.0),  # nothing measured: the estimate
])
def test_fit_scaling(points, rate, contention):
    got_rate, got_contention = fit_scaling(points, 25.0)
    assert got_rate == pytest.approx(rate, rel=0.02)
    assert got_contention == pytest.approx(contention, abs=0.02)


def test_capacity_follows_the_fit():
    ec2 = Facts(rate=30.0, boot_s=30.0)
    laptop = Facts(rate=35.0, boot_s=2.0, contention=1.0)
    assert [ec2.capacity(n) for n in (0, 1, 2, 10)] == [0.0, 30.0, 60.0, 300.0]
    assert [round(laptop.capacity(n), 6) for n in (1, 2, 10)] == [35.0, 35.0, 35.0]


def test_a_saturated_window_measures_the_rate_of_the_serving_fleet():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    feed(lx, range(0, 40), rate=30.0, backlog_at=lambda s: 5_000 - 30 * s, running=[("i-1", T0 - 100)])
    facts = lx.facts(T0 + 50)
    assert facts.rate_measured and facts.rate == pytest.approx(30.0) and facts.curve == ((1, 30.0),)
    assert facts.boot_s == pytest.approx(10.0) and facts.boot_measured  # launch -> WorkerStarts


def test_two_fleet_sizes_show_whether_more_instances_helped():
    for second_rate, contention in ((60.0, 0.0), (31.0, 0.94)):
        lx = learner()
        lx.record_ready("i-1", T0 - 100, T0 - 90)
        lx.record_ready("i-2", T0 - 100, T0 - 90)
        feed(lx, range(0, 30), rate=30.0, backlog_at=lambda s: 9_000, running=[("i-1", T0 - 100)])
        feed(lx, range(30, 60), rate=second_rate, backlog_at=lambda s: 9_000 - s,
             running=[("i-1", T0 - 100), ("i-2", T0 - 100)])
        facts = lx.facts(T0 + 70)
        assert dict(facts.curve) == pytest.approx({1: 30.0, 2: second_rate}, rel=0.01)
        assert facts.contention == pytest.approx(contention, abs=0.03)


def test_an_instance_that_may_have_waited_for_work_gives_no_rate_sample():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    # 10 messages: less than a worker holds, so it may have idled between batches
    feed(lx, range(0, 40), rate=3.0, backlog_at=lambda s: 10, running=[("i-1", T0 - 100)])
    facts = lx.facts(T0 + 50)
    assert not facts.rate_measured and facts.rate == 25.0


def test_a_stale_count_is_corrected_by_the_work_done_since():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    # The count says 900 for 40 s (a snapshot, as AWS's may be for a minute) while the fleet does 20/s.
    feed(lx, range(0, 40), rate=20.0, backlog_at=lambda s: 900, running=[("i-1", T0 - 100)])
    assert lx.backlog_estimate(T0 + 40) == pytest.approx(900 - 20 * 40, abs=40)
    # ... and the windows while the corrected count still held work measured the rate
    assert lx.facts(T0 + 40).curve == ((1, 20.0),)


def test_a_stale_count_under_idle_workers_is_no_backlog():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    # 300 visible for 40 s, yet a ready worker that long-polls did nothing: the count is a stale snapshot.
    feed(lx, range(0, 40), rate=0.0, backlog_at=lambda s: 300, running=[("i-1", T0 - 100)])
    assert lx.backlog_estimate(T0 + 40) == 0.0


def test_one_burst_is_not_a_stream_but_two_spans_of_arrivals_are():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    # a burst: 0, then 1000 seen at once, then draining at 25/s
    feed(lx, range(0, 60), rate=25.0, backlog_at=lambda s: 0 if s < 10 else max(0, 1_000 - 25 * (s - 10)),
         running=[("i-1", T0 - 100)])
    assert lx.facts(T0 + 70).arrival == 0.0
    lx2 = learner()
    lx2.record_ready("i-1", T0 - 100, T0 - 90)
    # a stream of 40/s against a fleet doing 25/s: the count grows by 15 a second
    feed(lx2, range(0, 60), rate=25.0, backlog_at=lambda s: 15 * s, running=[("i-1", T0 - 100)])
    assert lx2.facts(T0 + 70).arrival == pytest.approx(40.0, rel=0.1)


def test_nothing_queued_and_nothing_done_is_nothing_arriving():
    lx = learner()
    lx.record_ready("i-1", T0 - 100, T0 - 90)
    feed(lx, range(0, 60), rate=25.0, backlog_at=lambda s: 15 * s, running=[("i-1", T0 - 100)])
    feed(lx, range(60, 90), rate=0.0, backlog_at=lambda s: 0, running=[("i-1", T0 - 100)])
    assert lx.facts(T0 + 100).arrival == 0.0


def test_ready_times_and_boot_samples():
    lx = learner()
    assert lx.boot_s == 40.0
    for k, boot in enumerate((30.0, 34.0, 31.0)):
        lx.record_ready(f"i-{k}", T0, T0 + boot)
    lx.record_ready("i-0", T0, T0 + 99)  # a worker restart is not a second boot
    assert lx.boot_s == 31.0
    assert lx.ready_at("i-0", T0) == T0 + 30 and lx.measured_ready("i-0")
    assert lx.ready_at("i-unknown", T0) == T0 + 120  # no datum: served after a long wait, not at once
    lx.forget(["i-1"])
    assert not lx.measured_ready("i-0") and lx.measured_ready("i-1")
